"""Real-path loading code exercised offline: tiny random Qwen3 saved with save_pretrained and loaded
by path, the tokenizer refusal, Qwen3's padded vocabulary, and datasets in their hub schemas."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reference.data import (
    chat_prompts,
    detect_schema,
    load_problems,
)
from reference.models import (
    QWEN3_VOCAB,
    assert_vocab,
    build_tiny_qwen3_dir,
    check_same_tokenizer,
    count_params,
    load_causal_lm,
    load_frozen_teacher,
    load_tokenizer,
    logit_vocab_size,
    tiny_tokenizer,
)
from reference.rewards import score_batch
from theory.errors import InputError

FIX = Path(__file__).parent / "fixtures" / "data"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    # padded like Qwen3: 128 embedding rows for a ~100-token tokenizer
    return build_tiny_qwen3_dir(tmp_path_factory.mktemp("tiny_qwen3"), pad_vocab_to=128, seed=0)


# -- models ------------------------------------------------------------------------------------------


def test_load_by_path_cpu_fp32_and_forward(tiny_dir):
    model = load_causal_lm(tiny_dir, device="cpu")
    tok = load_tokenizer(tiny_dir)
    assert model.dtype == torch.float32
    assert tok.padding_side == "left"
    ids = tok(["\\boxed{12}"], return_tensors="pt").input_ids
    logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 128)
    # tied embeddings counted once: embedding rows x hidden appears a single time
    emb = model.get_input_embeddings().weight.numel()
    assert count_params(model) < sum(p.numel() for p in model.state_dict().values())
    assert emb == 128 * model.config.hidden_size


def test_frozen_teacher_has_no_trainable_state(tiny_dir):
    teacher = load_frozen_teacher(tiny_dir)
    assert not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        out = teacher(torch.tensor([[1, 2, 3]])).logits
    assert out.grad_fn is None


def test_bad_model_path_is_one_line(tmp_path):
    with pytest.raises(InputError, match="no such local directory"):
        load_causal_lm(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="cannot load model"):
        load_causal_lm(empty)


def test_tokenizer_refusal_compares_contents_not_sizes():
    a = tiny_tokenizer()
    check_same_tokenizer(a, tiny_tokenizer())  # identical: accepted
    with pytest.raises(InputError, match="tokenizers differ"):
        check_same_tokenizer(a, tiny_tokenizer(extra_tokens=("<tool>",)))
    # same size, same strings, different ids: a size check would pass, a KL would be garbage
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = a.get_vocab()
    swapped = dict(vocab)
    swapped["7"], swapped["8"] = vocab["8"], vocab["7"]
    b = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=swapped, unk_token="<|endoftext|>")))
    assert len(b) == len(a)
    with pytest.raises(InputError, match="has id"):
        check_same_tokenizer(a, b)


def test_toy_and_tiny_qwen_tokenizers_are_refused():
    from reference.tokenizer import toy_tokenizer

    with pytest.raises(InputError, match="teacher and student"):
        check_same_tokenizer(toy_tokenizer(), tiny_tokenizer())


def test_padded_vocab_never_enters_the_kl(tiny_dir):
    model = load_causal_lm(tiny_dir)
    tok = load_tokenizer(tiny_dir)
    n = logit_vocab_size(tok, model.config)
    assert n == len(tok) < model.config.vocab_size == 128
    torch.manual_seed(0)
    s = torch.randn(2, 3, 128)
    t = s.clone()
    t[..., n:] += 50.0  # padded columns disagree wildly; real ones agree
    kl_full = torch.nn.functional.kl_div(t.log_softmax(-1), s.log_softmax(-1), log_target=True, reduction="sum")
    s_u, t_u = s[..., :n], t[..., :n]  # what stages.completion_logits keeps
    kl_usable = torch.nn.functional.kl_div(t_u.log_softmax(-1), s_u.log_softmax(-1), log_target=True, reduction="sum")
    assert kl_full > 1.0
    assert kl_usable.abs() < 1e-5
    with pytest.raises(InputError, match="does not belong"):
        logit_vocab_size(tiny_tokenizer(extra_tokens=tuple(f"<x{i}>" for i in range(40))), model.config)


def test_assert_vocab_against_qwen3_config():
    from transformers import Qwen3Config

    assert_vocab(Qwen3Config(vocab_size=QWEN3_VOCAB))
    with pytest.raises(InputError, match="151936"):
        assert_vocab(Qwen3Config(vocab_size=151669), name="student")


# -- data ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fname, schema, n, dropped, dups",
    [
        ("math500.jsonl", "answer", 5, 0, 0),
        ("math_train.jsonl", "solution", 3, 1, 0),  # one solution has no \boxed: dropped, counted
        ("aime24.jsonl", "answer", 2, 0, 0),
        ("aime25.jsonl", "question", 2, 0, 0),
        ("dapo_math_17k.parquet", "dapo", 3, 0, 3),  # repeated hub rows de-duplicated
    ],
)
def test_fixtures_load_in_hub_schemas(fname, schema, n, dropped, dups):
    ps = load_problems(FIX / fname)
    assert (ps.schema, len(ps), ps.dropped, ps.duplicates) == (schema, n, dropped, dups)
    assert all(p.gold and p.question for p in ps.problems)


def test_golds_preparsed_and_dapo_wrapper_removed():
    train = load_problems(FIX / "math_train.jsonl")
    assert [p.gold for p in train.problems] == ["15", "\\frac12", "(-1,1)"]
    dapo = load_problems(FIX / "dapo_math_17k.parquet")
    q = dapo.problems[0].question
    assert q == "What is $6\\cdot 7$?"
    assert dapo.problems[0].uid == "idx-0"


def test_missing_column_and_bad_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "level": 1}\n')
    with pytest.raises(InputError, match="missing column 'answer'"):
        load_problems(bad, schema="answer")
    with pytest.raises(InputError, match="none of the known schemas"):
        load_problems(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_problems(tmp_path / "nope.parquet")
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read"):
        load_problems(garbage)
    assert detect_schema(["question", "answer", "id"]) == "question"


@pytest.mark.slow
def test_unreachable_hub_is_one_line():
    code = (
        "from reference.data import load_problems\n"
        "from theory.errors import InputError\n"
        "try:\n    load_problems('HuggingFaceH4/MATH-500')\n"
        "except InputError as e:\n    print('ERR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    line = out.stdout.strip()
    assert line.startswith("ERR cannot load hub dataset 'HuggingFaceH4/MATH-500' split 'test'"), out
    assert "\n" not in line


@pytest.mark.slow
def test_chat_prompts_thinking_off_and_rewards(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    ps = load_problems(FIX / "math500.jsonl")
    prompts = chat_prompts(ps.problems, tok)
    assert all(p.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") for p in prompts)
    assert "\\boxed{}" in prompts[0]
    completions, golds = [], []
    for p in ps.problems:
        completions += [f"so \\boxed{{{p.gold}}}", "I give up"]
        golds += [p.gold, p.gold]
    assert score_batch(completions, golds) == [1.0, 0.0] * len(ps)
