"""The trained student leaves as a Hugging Face checkpoint.

`export_student` finds the last student stage of a finished (or partly finished) run in its workdir —
the stage checkpoint `run_pipeline` wrote under `workdir/stages/<key>`, the key computed exactly as
the pipeline computes it — loads it into the configured student and writes `save_pretrained` with
its tokenizer, so `AutoModelForCausalLM.from_pretrained(out)` and `AutoTokenizer.from_pretrained(out)`
load it with no project code. The stage checkpoint is the one-process format whatever trained it
(replicated or FSDP2-sharded, reference.engines), so the export does not care how the run was launched.
`reference_export.json` beside the weights records where it came from.

    reference-pipeline export --config C --arm rl_teacher_bridge --seed 0 --workdir W --out DIR
    reference-pipeline run --config C --arm rl_teacher_bridge --seed 0 --export DIR   # run, then export
"""

from __future__ import annotations

import json
from pathlib import Path

from reference import checkpoint as ckpt
from reference.config import Config
from theory.arms import STAGES, STUDENT, Arm, get_arm, stage_labels
from theory.errors import InputError

EXPORT_META = "reference_export.json"


def final_student_stage(cfg: Config, arm: str | Arm, seed: int, teacher_labels: int | None = None) -> tuple[str, str]:
    """(stage name, stage key) of the arm's last stage that trains the student."""
    from reference.stage_runner import stage_key

    arm = get_arm(arm) if isinstance(arm, str) else arm
    acct = arm.labels(cfg.world.labels, teacher_labels)
    prefix, last = [], None
    for stage in arm.stages:
        prefix.append((stage.value, stage_labels(stage, acct)))
        if STAGES[stage].trains == STUDENT:
            last = (stage.value, stage_key(cfg, seed, list(prefix)))
    if last is None:
        raise InputError(f"arm {arm.name} trains no student stage: nothing to export")
    return last


def load_student(cfg: Config):
    """(model, tokenizer): the configured student on the CPU, as the pipeline builds it."""
    if cfg.student.is_tiny:
        from reference.tokenizer import toy_tokenizer
        tok = toy_tokenizer()
        model = ckpt.tiny_qwen3(cfg.student, len(tok), pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)
        return model, tok
    from reference import models as hf
    return hf.load_causal_lm(cfg.student.path, dtype=cfg.student.dtype), hf.load_tokenizer(cfg.student.path)


def export_student(cfg: Config, arm: str | Arm, seed: int, *, workdir: str | Path, out: str | Path,
                   teacher_labels: int | None = None) -> Path:
    """Write the run's final student to `out` with `save_pretrained` (weights, config, generation
    config, tokenizer), atomically (temporary directory, then rename). Returns `out`."""
    arm = get_arm(arm) if isinstance(arm, str) else arm
    stage, key = final_student_stage(cfg, arm, seed, teacher_labels)
    src = Path(workdir) / "stages" / key
    if not (src / "meta.json").is_file():
        raise InputError(f"no finished {stage} checkpoint for arm {arm.name} seed {seed} under "
                         f"{str(Path(workdir))!r} (expected stages/{key}): run the arm first")
    model, tok = load_student(cfg)
    meta = ckpt.load_weights(model, src)
    # the generation config carries the evaluation's sampling (the headline avg@k is sampled); the toy
    # models' top_k = 0 with do_sample unset is refused by save_pretrained's validation
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k = True, cfg.eval.temperature, cfg.eval.top_p, cfg.eval.top_k
    out = Path(out)
    with ckpt.atomic_directory(out) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / EXPORT_META).write_text(json.dumps(
            {"arm": arm.name, "seed": seed, "stage": stage, "stage_key": key, "config_hash": cfg.hash(),
             "config": cfg.source, "stage_sha256": meta.get("sha256"), "teacher_labels": teacher_labels},
            indent=1, default=str))
    return out
