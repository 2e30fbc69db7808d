"""The TRL backend (`[engine] trainer = "trl"`): every stage on the trainers labs already run.

    teacher / student GRPO  -> trl.GRPOTrainer                     (loss_type "dapo" | "grpo")
    forward-KL warmup (2a)  -> trl.experimental.gkd.GKDTrainer     (lmbda = 0: no student samples;
                                                                    seq_kd = True: the teacher samples
                                                                    every step; beta = 0: forward KL)
    OPD (2b)                -> trl.DistillationTrainer             (on-policy; beta = 1: reverse KL)

Same arm registry (theory.arms.STAGES: `stage_runner.train_stage` and the gate take their stage
functions from `stage_runner.update_rules(engine.trainer)`, `UPDATE_RULES` here), config, reward
(reference.rewards scoring of the world's answers), label split and stage checkpoints
(`stage_runner.run_stage` saves the trained model as before). `HYPERPARAMETERS` is the one table
from this project's config fields to TRL's; the fields with no TRL counterpart are in `UNMAPPED` with
the reason, and `FIXED` holds the values the reference loop hard-codes (AdamW's betas, eps, weight
decay), which are passed to TRL explicitly.

Three things are pinned so that both backends compute the same numbers (tests/test_trl_backend.py):
- data order: each trainer's sampler yields the reference's batches (`stages.batch_indices`, seeded from
  the stage key), each prompt repeated group-size times as TRL's own `RepeatSampler` does;
- sampling: generation draws from one torch RNG stream of its own (the CPU's and, on a GPU, the CUDA
  device's: `rng_state`), started from the stage's seeded state (stage_runner seeds both per stage,
  rank and run seed); the HF Trainer re-seeds torch at construction (`set_seed(0)`: the CPU and every
  CUDA device) and its data loader draws from the global generator, which would otherwise shift every
  sample and give every stage, rank and run seed one CUDA stream;
- schedule: the reference's `lr_factor` as a LambdaLR (HF's warmup starts at lr 0 and its cosine
  reaches 0; the reference's first step moves and its last step still moves).
And one behaviour: a GRPO batch without signal (every group's rewards equal) makes no optimizer step
in the reference; TRL would step AdamW on its momentum, so the optimizer skips that step here too.

Launch: one process, or several under `accelerate launch` (`engine.launcher = "accelerate"`) with
configs/accelerate/ddp.yaml or fsdp2.yaml. DDP: the trainers build their own Accelerator, which wraps
the model. FSDP2: the trained model is sharded in place by the reference loop's own
`engines.fsdp2_shard` and marked as transformers marks a model it shards at load time, so the Trainer
neither wraps nor moves it (accelerate applies FSDP only on GPUs, and one path is what a CPU test can
check). Either way the config's batch sizes stay global (each rank takes its contiguous 1/N of every
global batch, the reference's `engines.shard`), and what the reference keeps global stays global:
GRPO's no-signal skip is decided over all ranks, GKD's loss is the global token mean (its per-rank
"batchmean" would average rank means), the compute account is summed over ranks; the stage checkpoint
is gathered to rank 0 in the one-process format (tests/test_scale_sharded.py: 2 processes, killed after
a stage and resumed, end where one process ends).

Precision: the stage runner applies the stage plan before a trainer is built (reference.stage_plan): a
bf16 model trains on fp32 master weights, so the HF Trainer's AdamW holds fp32 moments, and its forward
autocasts to bf16. GRPO's `mini_batches` optimizer steps per generation: one generation batch, split
into mini-batches in the reference's order (stages.mini_batch_order; TRL's random row shuffle pinned),
old log-probs from the generation step.

Micro-batches: each rank trains a mini-batch in slices of at most `engine.micro_batch` completions
(`grpo_micro_batch`: per_device_train_batch_size, gradient_accumulation_steps = slices per mini-batch),
so TRL's steps_per_generation = mini_batches x slices and one mini-batch is one optimizer step; the
no-signal skip is decided per mini-batch, over all its slices. TRL's token-mean and sequence-mean losses
are normalised over the generation batch (tests/test_trl_backend.py). TRL still generates a rank's whole
batch in one `generate` call (its bounded alternatives are vLLM and continuous batching, neither wired
here).

Deviations: the forward-KL warmup and OPD have no micro-batch split of their own here (TRL's
gradient accumulation sizes are left at 1); GKD computes its loss at temperature 1, so `fkl.temperature`
must be 1 under TRL; `opd.estimator = "sampled"` has no TRL counterpart (DistillationTrainer is the
exact full-vocabulary divergence). At Qwen3 scale TRL's losses run over the padded vocabulary columns
(the reference slices them off; a trained model puts ~0 mass there).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
import tempfile
import time
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Sampler

from reference import stages
from reference.config import FKLConfig, GRPOConfig, OPDConfig
from reference.seeds import rng_state, set_rng_state
from theory.errors import InputError


# (section, field) -> the TRL argument it sets, and how. One row per reference config field of a stage.
HYPERPARAMETERS: dict[tuple[str, str], str] = {
    ("grpo", "lr"): "GRPOConfig.learning_rate (student GRPO)",
    ("grpo", "teacher_lr"): "GRPOConfig.learning_rate (teacher GRPO; 0 -> lr)",
    ("grpo", "group_size"): "GRPOConfig.num_generations",
    ("grpo", "prompts_per_step"): "GRPOConfig.generation_batch_size = prompts_per_step * group_size (TRL counts "
                                  "completions); per_device_train_batch_size = that / processes, in slices of at "
                                  "most engine.micro_batch (grpo_micro_batch) with gradient_accumulation_steps = "
                                  "steps_per_generation = slices per rank",
    ("grpo", "epochs"): "GRPOConfig.max_steps = stages.grpo_steps(labels, cfg)",
    ("grpo", "max_steps"): "GRPOConfig.max_steps = stages.grpo_steps(labels, cfg) (its cap)",
    ("grpo", "mini_batches"): "GRPOConfig.steps_per_generation (per_device_train_batch_size = prompts_per_step * "
                              "group_size / processes / mini_batches, one generation per mini_batches optimizer "
                              "steps; max_steps x mini_batches; TRL's row shuffle pinned to stages.mini_batch_order)",
    ("grpo", "clip_low"): "GRPOConfig.epsilon",
    ("grpo", "clip_high"): "GRPOConfig.epsilon_high",
    ("grpo", "loss"): "GRPOConfig.loss_type: token_mean -> 'dapo', seq_mean -> 'grpo'",
    ("grpo", "kl_coef"): "GRPOConfig.beta (k3 estimator, as TRL's)",
    ("grpo", "temperature"): "GRPOConfig.temperature (sampling and the training forward's logits / T)",
    ("grpo", "max_new_tokens"): "GRPOConfig.max_completion_length",
    ("grpo", "grad_clip"): "GRPOConfig.max_grad_norm",
    ("grpo", "warmup"): "the reference's lr_factor as the trainer's LambdaLR (warmup ratio)",
    ("grpo", "warmup_steps"): "the reference's lr_factor as the trainer's LambdaLR (warmup steps)",
    ("grpo", "schedule"): "the reference's lr_factor as the trainer's LambdaLR (constant / cosine / linear)",
    ("fkl", "lr"): "GKDConfig.learning_rate",
    ("fkl", "steps"): "GKDConfig.max_steps",
    ("fkl", "prompts_per_step"): "GKDConfig.per_device_train_batch_size x processes (one teacher sample per prompt)",
    ("fkl", "temperature"): "GKDConfig.temperature (teacher sampling; must be 1: GKD's loss is at T = 1)",
    ("fkl", "max_new_tokens"): "GKDConfig.max_new_tokens",
    ("fkl", "grad_clip"): "GKDConfig.max_grad_norm",
    ("fkl", "warmup"): "the reference's lr_factor as the trainer's LambdaLR (warmup ratio)",
    ("fkl", "warmup_steps"): "the reference's lr_factor as the trainer's LambdaLR (warmup steps)",
    ("fkl", "schedule"): "the reference's lr_factor as the trainer's LambdaLR",
    ("opd", "lr"): "DistillationConfig.learning_rate",
    ("opd", "steps"): "DistillationConfig.max_steps (the replay control: stage-3 GRPO's step count)",
    ("opd", "prompts_per_step"): "DistillationConfig.per_device_train_batch_size x processes (one student sample "
                                 "per prompt)",
    ("opd", "temperature"): "DistillationConfig.temperature (sampling and the divergence's softmax)",
    ("opd", "max_new_tokens"): "DistillationConfig.max_completion_length",
    ("opd", "estimator"): "'full' -> DistillationConfig.beta = 1.0 (exact full-vocabulary reverse KL)",
    ("opd", "grad_clip"): "DistillationConfig.max_grad_norm",
    ("opd", "warmup"): "the reference's lr_factor as the trainer's LambdaLR (warmup ratio)",
    ("opd", "warmup_steps"): "the reference's lr_factor as the trainer's LambdaLR (warmup steps)",
    ("opd", "schedule"): "the reference's lr_factor as the trainer's LambdaLR",
}
# Reference config fields of a stage section with no TRL argument, and why.
UNMAPPED: dict[tuple[str, str], str] = {}
# What the reference loop hard-codes, passed to every TRL config explicitly (stages.optimizer).
FIXED: dict[str, Any] = {
    "optim": "adamw_torch", "adam_beta1": 0.9, "adam_beta2": 0.99, "adam_epsilon": 1e-8, "weight_decay": 0.0,
    # GRPO accumulates over engine.micro_batch slices instead (grpo_args); GKD and distillation keep 1
    "gradient_accumulation_steps": 1, "top_p": 1.0, "top_k": 0,  # stage sampling is plain temperature sampling
    "seed": 0,  # unused for numbers: data order and sampling are the reference's (module docstring)
}
# fixed per trainer: the settings that make TRL's algorithm the reference's one (steps_per_generation is
# derived by TRL from generation_batch_size: mini_batches x micro-batch slices, grpo_args)
FIXED_GRPO: dict[str, Any] = {"scale_rewards": "group", "num_iterations": 1,
                              "importance_sampling_level": "token", "mask_truncated_completions": False}
STAGE_STATE = "s2d_stage_state.pt"  # this stage's own state beside a Trainer checkpoint (`_Pinned._save_checkpoint`)
FIXED_GKD: dict[str, Any] = {"lmbda": 0.0, "seq_kd": True, "beta": 0.0}
GRPO_LOSS_TYPES = {"token_mean": "dapo", "seq_mean": "grpo"}
OPD_BETA = {"full": 1.0}  # DistillationTrainer: beta 0 = forward KL, 1 = reverse KL
STAGE_SECTIONS = {"grpo": GRPOConfig, "fkl": FKLConfig, "opd": OPDConfig}


def _no_checkpointing() -> dict:
    """Activation checkpointing off (some TRL configs default it on; transformers 5 renamed the field)."""
    from transformers import TrainingArguments
    names = TrainingArguments.__dataclass_fields__
    name = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {name: False}


_NO_CHECKPOINTING: dict = {}


def _common_args(out_dir: str, *, lr: float, steps: int, per_device: int, grad_clip: float,
                 configured: bool = False, accumulation: int = FIXED["gradient_accumulation_steps"],
                 save_every: int = 0) -> dict:
    """TrainingArguments shared by the three trainers. `configured`: under the pipeline's accelerate engine,
    the trainer takes the launch's AcceleratorState as it is (TrainingArguments would otherwise reset it,
    and the engine's Accelerator would lose its device until the trainer builds a new one). `save_every`
    > 0: the Trainer's own checkpoint every that many optimizer steps (the mid-stage checkpoint,
    `train_built`), the last two kept."""
    if not _NO_CHECKPOINTING:
        _NO_CHECKPOINTING.update(_no_checkpointing())
    extra = {"accelerator_config": {"use_configured_state": True}} if configured else {}
    return dict(**extra, output_dir=out_dir, learning_rate=lr, max_steps=steps, per_device_train_batch_size=per_device,
                # bf16 False: a bf16 model's mixed precision is its own (reference.stage_plan: fp32 master,
                # autocast forward returning fp32 logits, as accelerate's bf16 wrapper would; twice would be
                # redundant), and a float32 model stays float32
                max_grad_norm=grad_clip, use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False,
                report_to="none", logging_steps=1, disable_tqdm=True,
                **({"save_strategy": "steps", "save_steps": save_every, "save_total_limit": 2, "save_only_model": False}
                   if save_every > 0 else {"save_strategy": "no"}),
                dataloader_num_workers=0, remove_unused_columns=False,
                optim=FIXED["optim"], adam_beta1=FIXED["adam_beta1"], adam_beta2=FIXED["adam_beta2"],
                adam_epsilon=FIXED["adam_epsilon"], weight_decay=FIXED["weight_decay"],
                gradient_accumulation_steps=accumulation, seed=FIXED["seed"],
                lr_scheduler_type="constant", **_NO_CHECKPOINTING)


def grpo_micro_batch(rows: int, micro_batch: int) -> int:
    """Completions per device in one TRL micro-step: the largest divisor of this rank's `rows` (prompts x
    group size) that is at most `micro_batch` (TRL cuts a generation batch into equal slices), all `rows`
    when `micro_batch` is 0 or at least `rows`. The reference loop's last slice may be shorter instead."""
    if micro_batch <= 0 or micro_batch >= rows:
        return rows
    return max(d for d in range(1, micro_batch + 1) if rows % d == 0)


def grpo_args(cfg: GRPOConfig, *, role: str, steps: int, prompts_per_step: int, out_dir: str, world: int = 1,
              configured: bool = False, micro_batch: int = 0, save_every: int = 0):
    """`prompts_per_step` per rank, `steps` rollout batches; one generation per rollout batch over the `world`
    ranks' batches, `mini_batches` optimizer steps on it, each on a mini-batch's rows in slices of at most
    `micro_batch` completions (`grpo_micro_batch`, accumulated; 0: one slice). TRL derives
    steps_per_generation = mini_batches x slices from the sizes."""
    from trl import GRPOConfig as TRLGRPOConfig
    G, M = cfg.group_size, cfg.mini_batches
    if prompts_per_step % M:
        raise InputError(f"grpo.mini_batches = {M} must divide the {prompts_per_step} prompts of a rank's batch "
                         "under trainer = \"trl\"")
    rows = prompts_per_step * G // M  # one mini-batch's completions on this rank
    per_device = grpo_micro_batch(rows, micro_batch)
    return TRLGRPOConfig(**_common_args(out_dir, lr=cfg.lr_for(role), steps=steps * M, per_device=per_device,
                                        grad_clip=cfg.grad_clip, configured=configured,
                                        accumulation=rows // per_device, save_every=save_every * M),
                         num_generations=G, generation_batch_size=prompts_per_step * G * world,
                         epsilon=cfg.clip_low, epsilon_high=cfg.clip_high, loss_type=GRPO_LOSS_TYPES[cfg.loss],
                         beta=cfg.kl_coef, temperature=cfg.temperature, top_p=FIXED["top_p"], top_k=FIXED["top_k"],
                         max_completion_length=cfg.max_new_tokens, disable_dropout=True, shuffle_dataset=False,
                         **FIXED_GRPO)


def gkd_args(cfg: FKLConfig, *, steps: int, out_dir: str, world: int = 1, configured: bool = False,
             save_every: int = 0):
    from trl.experimental.gkd import GKDConfig
    if cfg.temperature != 1.0:
        raise InputError(f"fkl.temperature = {cfg.temperature}: the TRL backend's forward-KL warmup (GKDTrainer) "
                         "computes its loss at temperature 1; set fkl.temperature = 1 or trainer = \"reference\"")
    per_device = _per_rank(cfg.prompts_per_step, world, "fkl.prompts_per_step")
    return GKDConfig(**_common_args(out_dir, lr=cfg.lr, steps=steps, per_device=per_device,
                                    grad_clip=cfg.grad_clip, configured=configured, save_every=save_every),
                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, disable_dropout=True,
                     **FIXED_GKD)


def distillation_args(cfg: OPDConfig, *, steps: int, prompts_per_step: int, out_dir: str, configured: bool = False,
                      save_every: int = 0):
    from trl import DistillationConfig
    if cfg.estimator not in OPD_BETA:
        raise InputError(f"opd.estimator = {cfg.estimator!r} has no TRL counterpart (DistillationTrainer computes "
                         "the exact full-vocabulary divergence); use estimator = \"full\" or trainer = \"reference\"")
    return DistillationConfig(**_common_args(out_dir, lr=cfg.lr, steps=steps, per_device=prompts_per_step,
                                             grad_clip=cfg.grad_clip, configured=configured, save_every=save_every),
                              beta=OPD_BETA[cfg.estimator], temperature=cfg.temperature, top_p=FIXED["top_p"],
                              top_k=FIXED["top_k"], max_completion_length=cfg.max_new_tokens, disable_dropout=True,
                              shuffle_dataset=False)


class ReferenceOrder(Sampler):
    """The reference's batches (`stages.batch_indices`), each index repeated `repeat` times in a row, each
    batch `batch_repeat` times (GRPOTrainer reads one generation batch per optimizer step's slice and samples
    only at the first of its `steps_per_generation`, as its own RepeatSampler's repeat_count arranges)."""

    def __init__(self, n_items: int, per_step: int, steps: int, seed: int, repeat: int = 1, batch_repeat: int = 1):
        self.n_items, self.per_step, self.steps, self.seed, self.repeat = n_items, per_step, steps, seed, repeat
        self.batch_repeat = batch_repeat

    def __iter__(self):
        for idx in stages.batch_indices(self.n_items, self.per_step, self.steps, np.random.default_rng(self.seed)):
            for _ in range(self.batch_repeat):
                for i in idx:
                    for _ in range(self.repeat):
                        yield i

    def __len__(self) -> int:
        return self.per_step * self.steps * self.repeat * self.batch_repeat


class _Pinned:
    """Mixin for the three trainers: the reference's data order, sampling RNG stream, lr schedule,
    and a per-step log in the reference's keys."""

    def _pin(self, order: ReferenceOrder, rng: tuple[torch.Tensor, torch.Tensor | None],
             lr_of_step: Callable[[int], float], ctx: stages.StageContext | None = None):
        self._order, self._rng_state, self._lr_of_step, self._ctx = order, rng, lr_of_step, ctx
        self._tokens = 0

    def _get_train_sampler(self, dataset=None):
        return self._order

    def _save(self, output_dir: str | None = None, state_dict=None):
        """A Trainer checkpoint's weights as a plain state dict (WEIGHTS_NAME, which its resume loads): the
        model's save_pretrained would also write its generation config, which transformers refuses to save
        with the sampling settings the stages pin (top_k 0 without do_sample)."""
        from transformers.utils import WEIGHTS_NAME
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict() if state_dict is None else state_dict, out / WEIGHTS_NAME)

    def _save_checkpoint(self, model, trial):
        """Beside the Trainer's own checkpoint (weights, optimizer, scheduler, its RNG states, trainer state):
        this stage's sampling stream, token count and log, written first (a checkpoint folder whose trainer
        state exists holds them)."""
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        log = self._stage_log
        torch.save({"sampling": self._rng_state, "tokens": self._tokens, "entries": list(log.entries),
                    "pending": list(log.pending), "skipped": list(log.skipped)}, folder / STAGE_STATE)
        super()._save_checkpoint(model, trial)

    @contextmanager
    def _defer_fsdp_gradient_reduction(self):
        """transformers' `no_sync` for a model it sharded at load time reads `config.distributed_config`, which a
        model sharded by `engines.fsdp2_shard` lacks: the same for plain FSDP2 (no HSDP), the reduce-scatter
        skipped on every micro-step but the last (as the reference loop's `stages._backward`)."""
        self.model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    @contextmanager
    def _sampling_stream(self):
        outer = rng_state()
        set_rng_state(self._rng_state)
        try:
            yield
        finally:
            self._rng_state = rng_state()
            set_rng_state(outer)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            opt = self.optimizer if optimizer is None else optimizer
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, self._lr_of_step)
        return self.lr_scheduler


def _per_rank(prompts: int, world: int, what: str) -> int:
    """Prompts per rank and step: TRL's batch sizes are per device, the config's are global (the
    reference loop shards each global batch over the ranks, `engines.shard`)."""
    if prompts % world:
        raise InputError(f"{what} = {prompts} does not divide over {world} processes under trainer = \"trl\": "
                         "make it a multiple of the process count")
    return prompts // world


def _world(ctx: stages.StageContext | None) -> int:
    return 1 if ctx is None or ctx.engine is None else ctx.engine.world_size


def _launched(ctx: stages.StageContext | None) -> bool:
    """The pipeline runs under its accelerate engine (`engine.launcher = "accelerate"`)."""
    return ctx is not None and ctx.engine is not None


def _lr_of_step(schedule_cfg, steps: int, updates: int = 1) -> Callable[[int], float]:
    """The reference's lr factor of optimizer step s: one rollout step's `updates` steps share its factor."""
    return lambda s: stages.lr_factor(min(s // updates, steps - 1), steps, schedule_cfg.warmup, schedule_cfg.schedule,
                                      schedule_cfg.warmup_steps)


def _trainer_classes():
    """Subclasses defined on first use: importing TRL costs seconds and the reference backend never needs it."""
    from trl import DistillationTrainer, GRPOTrainer
    from trl.experimental.gkd import GKDTrainer
    import trl.trainer.grpo_trainer as grpo_module

    class PinnedGRPO(_Pinned, GRPOTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            with self._sampling_stream():
                return super()._generate_single_turn(*args, **kwargs)

        def training_step(self, model, inputs, num_items_in_batch=None):
            batch = self._prepare_inputs(inputs)
            # the reference makes no update on a mini-batch without signal (every group's rewards equal); a
            # mini-batch is `gradient_accumulation_steps` slices of the generation batch, decided at its first
            slices, part = self.args.gradient_accumulation_steps, self._step % self.args.steps_per_generation
            if part % slices == 0:
                # the decision is global: under DDP every rank steps, or none does (as the reference's)
                signal = torch.stack([(b["advantages"] != 0).any()
                                      for b in self._buffered_inputs[part:part + slices]]).any().float()
                if self._ctx is not None:
                    signal = stages.global_sum(signal, self._ctx)
                self._skip_update = not bool(signal > 0)
                self._skipped.append(self._skip_update)
            # the compute account: the rollout, plus the update's forward/backward when there is one, plus the
            # old log-probs' forward under mini-batches (each slice counts its rows: the batch once)
            rollout = int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())
            self._tokens += rollout * ((1 if self._skip_update else 2) + (self.args.steps_per_generation > slices))
            return super().training_step(model, batch, num_items_in_batch)

        def _prepare_inputs(self, generation_batch):
            if isinstance(generation_batch, dict) and "advantages" in generation_batch:
                return generation_batch  # already generated this step
            if self.args.steps_per_generation == 1:
                return super()._prepare_inputs(generation_batch)
            # mini-batches or slices: TRL shuffles the generation batch's rows (torch.randperm) before splitting
            # it into steps_per_generation parts; the reference's order instead (stages.mini_batch_order: whole
            # groups, prompt p in mini-batch p mod M, each mini-batch's slices consecutive), so both backends
            # update on the same mini-batches
            shuffle = grpo_module.shuffle_sequence_dict
            grpo_module.shuffle_sequence_dict = self._mini_batch_rows
            try:
                return super()._prepare_inputs(generation_batch)
            finally:
                grpo_module.shuffle_sequence_dict = shuffle

        def _mini_batch_rows(self, seq_dict):
            G, M = self.num_generations, self.args.steps_per_generation // self.args.gradient_accumulation_steps
            B = len(next(v for v in seq_dict.values() if v is not None))
            order = stages.mini_batch_order(B // G, G, M)

            def take(v):
                if v is None or (isinstance(v, torch.Tensor) and v.ndim == 0):
                    return v
                return v[order.to(v.device)] if isinstance(v, torch.Tensor) else [v[i] for i in order.tolist()]
            return {k: take(v) for k, v in seq_dict.items()}

        def create_optimizer(self, model=None):
            opt = super().create_optimizer(model) if model is not None else super().create_optimizer()
            step = opt.step

            def guarded(*a, **k):
                if getattr(self, "_skip_update", False):
                    return None
                return step(*a, **k)
            opt.step = guarded
            return opt

    class PinnedGKD(_Pinned, GKDTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            with self._sampling_stream():
                # with lmbda = 0 and seq_kd the parent samples the teacher once, then trains on it; the draw
                # of python's `random` that picks the branch is not torch's stream
                loss = super().training_step(model, inputs, num_items_in_batch)
            self._tokens += 3 * int(inputs["attention_mask"].sum())
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # GKD's "batchmean" divides by this rank's completion tokens, so DDP would average per-rank means;
            # the reference's normaliser (global token count / world size) makes DDP's average the global
            # token mean. One process: unchanged (GKD's own batchmean).
            if num_items_in_batch is None and self._ctx is not None and stages.distributed(self._ctx):
                num_items_in_batch = stages.normaliser((inputs["labels"][:, 1:] != -100).sum().float(), self._ctx)
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class PinnedDistillation(_Pinned, DistillationTrainer):
        def _generate_single_turn(self, *args, **kwargs):
            with self._sampling_stream():
                return super()._generate_single_turn(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            self._tokens += 3 * int(inputs["prompt_mask"].sum() + inputs["completion_mask"].sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return PinnedGRPO, PinnedGKD, PinnedDistillation


class _Log:
    """A TrainerCallback collecting each step's log in the reference's keys, calling `progress`."""

    RENAME = {"grpo": {"reward": "reward", "frac_reward_zero_std": "zero_signal_fraction", "loss": "loss",
                       "grad_norm": "grad_norm", "learning_rate": "lr", "completions/mean_length": "length"},
              "fkl": {"loss": "forward_kl", "grad_norm": "grad_norm", "learning_rate": "lr"},
              "opd": {"loss": "loss", "grad_norm": "grad_norm", "learning_rate": "lr",
                      "completions/mean_length": "length"}}

    def __init__(self, kind: str, total: int, progress, updates: int = 1):
        from transformers import TrainerCallback
        self.kind, self.total, self.progress, self.entries = kind, total, progress, []
        # GRPO mini-batches: TRL logs each of a rollout step's `updates` optimizer steps; the reference logs the
        # step once, with the mean loss and grad norm of the updates it made (`skipped`: PinnedGRPO's record)
        self.updates, self.pending, self.skipped = updates, [], []
        log = self

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if not logs or "train_runtime" in logs:
                    return
                entry = {new: float(logs[old]) for old, new in log.RENAME[kind].items() if old in logs}
                if log.updates > 1:
                    log.pending.append(entry)
                    if len(log.pending) < log.updates:
                        return
                    entry = log.merged()
                entry = {"step": len(log.entries), **entry}
                if kind == "opd" and "loss" in entry:  # beta = 1: the loss is the batch's reverse KL before the step
                    entry["kl_to_teacher"] = entry["loss"]
                log.entries.append(entry)
                if log.progress:
                    log.progress(len(log.entries), log.total, entry)
        self.callback = Callback()

    def merged(self) -> dict:
        """One rollout step's entry from its updates' entries (the first carries the rollout's metrics)."""
        parts, self.pending = self.pending, []
        skipped = self.skipped[len(self.entries) * self.updates:][:len(parts)]
        made = [e for e, skip in zip(parts, skipped) if not skip] or parts[:1]
        entry = dict(parts[0])
        for key in ("loss", "grad_norm"):
            if all(key in e for e in made):
                entry[key] = float(np.mean([e[key] for e in made]))
        if not all(skipped):  # as the reference logs a step with updates
            entry["updates"] = len(made)
        return entry


def _quiet(trainer, use_cache: bool) -> None:
    """The stage's progress bar and tracker show the log; the Trainer's own printer would repeat it.
    TRL's constructors turn the model's KV cache off for training (`config.use_cache = False`); it is
    put back here and turned off only while `train_built` trains, so sampling and evaluation outside the
    stage keep their cache (and their numbers)."""
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    trainer.model.config.use_cache = use_cache


def _prompt_dataset(problems, *, with_gold: bool):
    from datasets import Dataset
    rows = {"prompt": [p.prompt for p in problems]}
    if with_gold:
        rows["gold"] = [p.gold for p in problems]
    return Dataset.from_dict(rows)


def _reward(ctx: stages.StageContext):
    def correct(prompts, completions, gold, **_):
        return [float(r) for r in ctx.score_batch(list(completions), list(gold))]
    return correct


def _set_eos(model, tok) -> None:
    """TRL reads the stop token from the model's generation config (the toy models carry none)."""
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        gc.eos_token_id = tok.eos_token_id
        gc.pad_token_id = tok.pad_token_id


def build_grpo(policy, problems, cfg: GRPOConfig, ctx: stages.StageContext, tok, *, role: str, seed: int,
               out_dir: str, ref=None, limit: int | None = None, progress=None, save_every: int = 0):
    """(trainer, log, steps): a GRPOTrainer pinned to the reference's order, stream and schedule."""
    PinnedGRPO, _, _ = _trainer_classes()
    steps = stages.grpo_steps(len(problems), cfg)
    P = min(cfg.prompts_per_step, max(1, len(problems)))
    taken = steps if limit is None else min(steps, limit)
    what = "grpo.prompts_per_step" if P == cfg.prompts_per_step else "the labeled problem count"
    args = grpo_args(cfg, role=role, steps=taken, prompts_per_step=_per_rank(P, _world(ctx), what), out_dir=out_dir,
                     world=_world(ctx), configured=_launched(ctx), micro_batch=ctx.micro_batch, save_every=save_every)
    if cfg.kl_coef > 0:
        raise InputError("grpo.kl_coef > 0 under trainer = \"trl\": GRPOTrainer reloads the reference model from the "
                         "policy's path, which an in-memory model lacks; set kl_coef = 0 or trainer = \"reference\"")
    _set_eos(policy, tok)
    log = _Log("grpo", taken, progress, updates=cfg.mini_batches)
    use_cache = policy.config.use_cache
    policy = _sharded(policy, ctx)  # after every refusal above: a refused stage leaves the model as it was
    state = rng_state()  # the stage's seeded streams: the trainer's set_seed(0) would replace them
    trainer = PinnedGRPO(model=policy, reward_funcs=[_reward(ctx)], args=args,
                         train_dataset=_prompt_dataset(problems, with_gold=True), processing_class=tok,
                         callbacks=[log.callback])
    set_rng_state(state)
    _quiet(trainer, use_cache)
    trainer._pin(ReferenceOrder(len(problems), P, taken, seed, repeat=cfg.group_size,
                                batch_repeat=args.steps_per_generation),
                 state, _lr_of_step(cfg, steps, cfg.mini_batches), ctx)
    trainer._skipped = log.skipped
    return trainer, log, taken


class _PromptCollator:
    """GKD's batch of prompts (left-padded): the teacher completes them inside the trainer (seq_kd)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, rows):
        enc = self.tok([r["prompt"] for r in rows], return_tensors="pt", padding=True, add_special_tokens=False)
        # no "labels" key: the HF Trainer would count the (all-masked) prompt labels as the loss normaliser
        return {"prompts": enc["input_ids"], "prompt_attention_mask": enc["attention_mask"],
                "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def build_gkd(student, teacher, prompts, cfg: FKLConfig, tok, *, seed: int, out_dir: str,
              limit: int | None = None, progress=None, ctx: stages.StageContext | None = None, save_every: int = 0):
    _, PinnedGKD, _ = _trainer_classes()
    taken = cfg.steps if limit is None else min(cfg.steps, limit)
    args = gkd_args(cfg, steps=taken, out_dir=out_dir, world=_world(ctx), configured=_launched(ctx),
                    save_every=save_every)
    _set_eos(student, tok)
    _set_eos(teacher, tok)
    log = _Log("fkl", taken, progress)
    use_cache = student.config.use_cache
    student = _sharded(student, ctx)
    state = rng_state()  # the stage's seeded streams: the trainer's set_seed(0) would replace them
    trainer = PinnedGKD(model=student, teacher_model=teacher, args=args, data_collator=_PromptCollator(tok),
                        train_dataset=_prompt_dataset(prompts, with_gold=False), processing_class=tok,
                        callbacks=[log.callback])
    set_rng_state(state)
    _quiet(trainer, use_cache)
    trainer._pin(ReferenceOrder(len(prompts), cfg.prompts_per_step, taken, seed), state, _lr_of_step(cfg, cfg.steps),
                 ctx)
    return trainer, log, taken


def build_distillation(student, teacher, prompts, cfg: OPDConfig, tok, *, seed: int, out_dir: str,
                       steps: int | None = None, prompts_per_step: int | None = None, limit: int | None = None,
                       progress=None, ctx: stages.StageContext | None = None, save_every: int = 0):
    _, _, PinnedDistillation = _trainer_classes()
    steps = cfg.steps if steps is None else steps
    per_step = cfg.prompts_per_step if prompts_per_step is None else prompts_per_step
    taken = steps if limit is None else min(steps, limit)
    what = "opd.prompts_per_step" if prompts_per_step is None else "the replay control's prompts per step"
    args = distillation_args(cfg, steps=taken, prompts_per_step=_per_rank(per_step, _world(ctx), what), out_dir=out_dir,
                             configured=_launched(ctx), save_every=save_every)
    _set_eos(student, tok)
    _set_eos(teacher, tok)
    log = _Log("opd", taken, progress)
    use_cache = student.config.use_cache
    student = _sharded(student, ctx)
    state = rng_state()  # the stage's seeded streams: the trainer's set_seed(0) would replace them
    trainer = PinnedDistillation(model=student, teacher_model=teacher, args=args,
                                 train_dataset=_prompt_dataset(prompts, with_gold=False), processing_class=tok,
                                 callbacks=[log.callback])
    set_rng_state(state)
    _quiet(trainer, use_cache)
    trainer._pin(ReferenceOrder(len(prompts), per_step, taken, seed), state, _lr_of_step(cfg, steps), ctx)
    return trainer, log, taken


def last_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete Trainer checkpoint under `out_dir` (its trainer state and this stage's state in)."""
    done = [d for d in Path(out_dir).glob("checkpoint-*")
            if (d / "trainer_state.json").is_file() and (d / STAGE_STATE).is_file()]
    return max(done, key=lambda d: int(d.name.rsplit("-", 1)[1]), default=None)


def train_built(name: str, built, *, resume: bool = False) -> stages.StageResult:
    """Train a built (trainer, log, steps taken) of `build_grpo` / `build_gkd` / `build_distillation`;
    `resume`: from the newest checkpoint in its output directory, when there is one (the Trainer's own
    resume, this stage's sampling stream, tokens and log put back first)."""
    trainer, log, taken = built
    trainer._stage_log = log
    t0 = time.perf_counter()
    config = trainer.model.config
    use_cache, config.use_cache = config.use_cache, False
    ckpt = last_checkpoint(trainer.args.output_dir) if resume else None
    if ckpt is not None:
        st = torch.load(ckpt / STAGE_STATE, weights_only=False)
        trainer._rng_state, trainer._tokens = st["sampling"], st["tokens"]
        log.entries[:], log.pending[:], log.skipped[:] = st["entries"], st["pending"], st["skipped"]
    try:
        if taken > 0:
            trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    finally:
        config.use_cache = use_cache
    ctx = trainer._ctx
    tokens = trainer._tokens if ctx is None else stages.all_tokens(trainer._tokens, ctx)  # global, as the reference's
    trainer.accelerator.free_memory()  # drop the accelerator's references to this stage's wrapped model and optimizer
    return stages.StageResult(name, taken, tokens, time.perf_counter() - t0, tuple(log.entries))


def _tokenizer(ctx: stages.StageContext):
    tok = getattr(ctx.rollout, "tok", None)
    if tok is None:
        raise InputError("trainer = \"trl\" needs the HF rollout's tokenizer (engine.rollout = \"hf\"); TRL's "
                         "own vLLM generation is not wired yet")
    return tok


def _sharded(model, ctx: stages.StageContext):
    """Under an FSDP2 launch, the trained model sharded in place by `engines.fsdp2_shard` (the reference
    loop's own sharding) and marked as transformers marks a model it shards at load time
    (`from_pretrained(distributed_config=...)`): the Trainer then neither moves it nor wraps it in DDP,
    builds AdamW on the shards, and generation decodes in lockstep (`synced_gpus`). Else the model as is.
    For GRPO's micro-batches the Trainer's no-sync branch for such models reads `config.distributed_config`,
    which only a model sharded by transformers itself carries: `_Pinned._defer_fsdp_gradient_reduction`
    replaces it."""
    if ctx is None or not stages.sharded(ctx):
        return model
    from reference.engines import fsdp2_shard
    from reference.stage_plan import mixed_precision_policy
    model = fsdp2_shard(model, ctx.engine, mp_policy=mixed_precision_policy(model))
    model._is_distributed_loading_by_transformers = True
    model._is_fsdp_managed_module = True
    return model


@contextmanager
def _frozen(teacher):
    """The frozen scorer without gradients for the stage (a teacher trained by teacher GRPO still has
    them on); restored after, so later stages see the model as they would have."""
    flags = [p.requires_grad for p in teacher.parameters()]
    teacher.requires_grad_(False)
    try:
        yield teacher
    finally:
        for p, f in zip(teacher.parameters(), flags):
            p.requires_grad_(f)


# The three stage functions with the signatures of reference.stages; `UPDATE_RULES` maps the stage table's
# update rules to them (stage_runner.update_rules hands it to the stage dispatch and the gate under
# trainer = "trl"), so the dispatch on theory.arms.STAGES stays in one place.

@contextmanager
def _output_dir(watch):
    """Where a stage's Trainer writes: the mid-stage checkpoint's directory (`reference.midstage.MidStage`:
    the Trainer's checkpoints every `watch.every` steps, resumed from; the stage runner removes it once the
    stage is saved), else a temporary directory (nothing kept)."""
    if watch is not None and watch.every > 0:
        Path(watch.directory).mkdir(parents=True, exist_ok=True)
        yield str(watch.directory), watch.every
        return
    with tempfile.TemporaryDirectory(prefix="trl_") as out:
        yield out, 0


def trl_grpo(policy, problems, cfg: GRPOConfig, ctx: stages.StageContext, *, role: str, seed: int, ref=None,
             progress=None, name: str = "grpo", limit: int | None = None, watch=None) -> stages.StageResult:
    """`stages.grpo` on GRPOTrainer (`ref` unused: kl_coef > 0 is refused, see `build_grpo`)."""
    with _output_dir(watch) as (out, every):
        return train_built(name, build_grpo(policy, problems, cfg, ctx, _tokenizer(ctx), role=role, seed=seed,
                                            out_dir=out, limit=limit, progress=progress, save_every=every),
                           resume=every > 0)


def trl_fkl_warmup(student, teacher, prompts, cfg: FKLConfig, ctx: stages.StageContext, *, seed: int, progress=None,
                   name: str = "fkl_warmup", limit: int | None = None, watch=None) -> stages.StageResult:
    """`stages.fkl_warmup` on GKDTrainer (lmbda 0, seq_kd, beta 0)."""
    with _output_dir(watch) as (out, every), _frozen(teacher):
        return train_built(name, build_gkd(student, teacher, prompts, cfg, _tokenizer(ctx), seed=seed, out_dir=out,
                                           limit=limit, progress=progress, ctx=ctx, save_every=every),
                           resume=every > 0)


def trl_opd(student, teacher, prompts, cfg: OPDConfig, ctx: stages.StageContext, *, seed: int, steps: int | None = None,
            prompts_per_step: int | None = None, progress=None, name: str = "opd",
            limit: int | None = None, watch=None) -> stages.StageResult:
    """`stages.opd` on DistillationTrainer (beta 1)."""
    with _output_dir(watch) as (out, every), _frozen(teacher):
        return train_built(name, build_distillation(student, teacher, prompts, cfg, _tokenizer(ctx), seed=seed,
                                                    out_dir=out, steps=steps, prompts_per_step=prompts_per_step,
                                                    limit=limit, progress=progress, ctx=ctx, save_every=every),
                           resume=every > 0)


UPDATE_RULES = {"grpo": trl_grpo, "fkl": trl_fkl_warmup, "opd": trl_opd}
