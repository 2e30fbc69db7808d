"""Loading real causal LMs and tokenizers (hub id or local directory) for the Qwen3-scale path.

- `load_causal_lm`: bf16 on GPU, fp32 on CPU unless told otherwise; local directories never touch
  the network. A load failure is one `InputError` line naming the model.
- `load_frozen_teacher`: the teacher only scores tokens, so it holds no optimizer state and no
  gradients (`requires_grad_(False)`, `eval()`).
- `check_same_tokenizer`: distillation compares per-token distributions, so teacher and student
  must share the *same* vocabulary (same token -> same id), not merely the same size. Call it before
  any training.
- `logit_vocab_size`: Qwen3's checkpoints pad the embedding matrix to 151936 rows while the tokenizer
  has 151669 tokens. The padded rows are never sampled but do carry logits; a full-vocabulary KL must
  drop them (they can differ arbitrarily between teacher and student): `stages.completion_logits`
  slices every stage's logits to this size.
- `build_tiny_qwen3_dir`: a random tiny Qwen3 + a Qwen-style chat tokenizer saved with
  `save_pretrained`, so tests and `gpu_check --tiny` exercise the same load-by-path code as real runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from theory.errors import InputError

QWEN3_VOCAB = 151936  # official padded config vocabulary of every Qwen3 dense checkpoint


def quiet() -> None:
    """Silence TRL's experimental notices, Python warnings and transformers' info logs (CLI runs and workers)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import warnings
    warnings.filterwarnings("ignore")
    from transformers.utils import logging
    logging.set_verbosity_error()


def default_dtype(device: str | torch.device) -> torch.dtype:
    """bf16 on accelerators (the anchors and the paper's setting), fp32 on CPU (bf16 matmuls are slow there)."""
    return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16


def _is_local(path_or_id: str | Path) -> bool:
    p = str(path_or_id)
    local = Path(p).expanduser().is_dir()
    if not local and (p.startswith(("/", ".", "~")) or os.sep + os.sep in p or Path(p).exists()):
        # looks like a path, not "org/name": do not send it to the hub
        raise InputError(f"model/tokenizer path {p!r}: no such local directory")
    return local


def _resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise InputError(f"dtype must be one of {', '.join(table)}, got {dtype!r}")
    return table[dtype]


def load_causal_lm(
    path_or_id: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device = "cpu",
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
) -> torch.nn.Module:
    """A `AutoModelForCausalLM` from a local directory or a hub id, on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    torch_dtype = _resolve_dtype(dtype, device)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    local = _is_local(path_or_id)
    if local:
        kwargs["local_files_only"] = True
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path_or_id), **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        where = "local directory" if local else "hub id"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load model {str(path_or_id)!r} ({where}): {first}") from None
    if str(path_or_id).startswith("Qwen/Qwen3"):
        assert_vocab(model.config, QWEN3_VOCAB, name=str(path_or_id))  # the real config, at run time
    model.to(device)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    return model


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """No gradients, eval mode: a frozen model owns no optimizer state and no activations for backward."""
    model.requires_grad_(False)
    model.eval()
    return model


def load_frozen_teacher(
    path_or_id: str | Path, *, dtype: str | torch.dtype | None = None, device: str | torch.device = "cpu"
) -> torch.nn.Module:
    return freeze(load_causal_lm(path_or_id, dtype=dtype, device=device))


def load_tokenizer(path_or_id: str | Path):
    """The tokenizer, left-padded for decoder-only generation; a pad token is guaranteed."""
    from transformers import AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True} if _is_local(path_or_id) else {}
    try:
        tok = AutoTokenizer.from_pretrained(str(path_or_id), **kwargs)
    except (OSError, ValueError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load tokenizer {str(path_or_id)!r}: {first}") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def check_same_tokenizer(tok_a, tok_b, *, names: tuple[str, str] = ("teacher", "student")) -> None:
    """Raise `InputError` unless both tokenizers map the same token strings to the same ids.

    Sizes alone are not enough: two vocabularies of equal length can assign different ids, and a
    token-level KL would then compare unrelated tokens.
    """
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    if va == vb:
        return
    a, b = names
    only_a = sorted(set(va) - set(vb))
    only_b = sorted(set(vb) - set(va))
    if only_a or only_b:
        example = f"{a} has {only_a[0]!r}" if only_a else f"{b} has {only_b[0]!r}"
        raise InputError(
            f"{a} and {b} tokenizers differ ({len(va)} vs {len(vb)} tokens; {example} that the other "
            f"lacks): distillation needs one shared vocabulary — pick a {a}/{b} pair of the same family"
        )
    moved = next(t for t in sorted(va) if va[t] != vb[t])
    raise InputError(
        f"{a} and {b} tokenizers differ: token {moved!r} has id {va[moved]} in the {a} and "
        f"{vb[moved]} in the {b} — distillation needs one shared vocabulary"
    )


def logit_vocab_size(tokenizer, config) -> int:
    """How many leading logit columns are real tokens (the rest is padding of the embedding matrix)."""
    n_tok = len(tokenizer)
    n_cfg = int(config.vocab_size)
    if n_tok > n_cfg:
        raise InputError(
            f"tokenizer has {n_tok} tokens but the model's vocab_size is {n_cfg}: "
            "this tokenizer does not belong to this model"
        )
    return n_tok


def assert_vocab(config, expected: int = QWEN3_VOCAB, *, name: str = "model") -> None:
    """Refuse a checkpoint whose config vocabulary is not the expected one (e.g. 151936 for Qwen3)."""
    got = int(config.vocab_size)
    if got != expected:
        raise InputError(f"{name}: config vocab_size is {got}, expected {expected} for this model family")


def count_params(model: torch.nn.Module) -> int:
    """Unique parameters (tied input/output embeddings counted once); works on the meta device."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    return total


# --------------------------------------------------------------------------------------------------
# A tiny Qwen3 on disk (tests, gpu_check --tiny)
# --------------------------------------------------------------------------------------------------

# A Qwen3-like chat template, reduced to what the pipeline uses: system/user/assistant turns and the
# empty think block that Qwen3 inserts when `enable_thinking=False`.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)
_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def tiny_tokenizer(extra_tokens: tuple[str, ...] = ()):
    """A character-level `PreTrainedTokenizerFast` with Qwen's chat specials and template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    pieces = list(_SPECIALS) + ["\\boxed{"] + list(extra_tokens) + chars
    vocab = {t: i for i, t in enumerate(dict.fromkeys(pieces))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    alts = "|".join(Regex_escape(t) for t in list(_SPECIALS) + ["\\boxed{"] + list(extra_tokens))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(f"{alts}|.|\\n"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def Regex_escape(s: str) -> str:  # noqa: N802 — mirrors re.escape for the tokenizers Regex
    import re

    return re.escape(s)


def tiny_qwen3_config(vocab_size: int, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                      head_dim: int = 8, intermediate: int = 64, tie: bool = True, max_position: int = 512,
                      pad_token_id: int | None = None, eos_token_id: int | None = None):
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, head_dim=head_dim, intermediate_size=intermediate,
        tie_word_embeddings=tie, max_position_embeddings=max_position,
        pad_token_id=pad_token_id, eos_token_id=eos_token_id,
    )


def build_tiny_qwen3_dir(out_dir: str | Path, *, seed: int = 0, pad_vocab_to: int = 0, tokenizer=None,
                         **shape: Any) -> Path:
    """Save a random tiny Qwen3ForCausalLM + tokenizer to `out_dir` with `save_pretrained`.

    `pad_vocab_to` > len(tokenizer) reproduces Qwen3's padded embedding matrix at toy size.
    """
    from transformers import Qwen3ForCausalLM

    tok = tokenizer if tokenizer is not None else tiny_tokenizer()
    vocab = max(len(tok), pad_vocab_to)
    cfg = tiny_qwen3_config(vocab, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **shape)
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out

