"""A small tokenizer for the toy world, built locally as a real `PreTrainedTokenizerFast`.

It is the same object type a Qwen3 checkpoint loads, so every stage treats both scales alike
(padding side, special tokens, `decode`). One token per character, plus `\\boxed{` (the answer
protocol's opener) and `ANS` (the non-verifiable answer habit of the raw teacher) as single tokens.
"""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SPECIAL = (PAD, EOS, UNK)
PIECES = tuple("0123456789") + ("+", "-", "*", "=", ";", "\\boxed{", "}", "ANS")


@lru_cache(maxsize=1)
def toy_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(SPECIAL + PIECES)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # `\boxed{` and `ANS` first so they win over single characters; everything else is one char.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"\\boxed\{|ANS|."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK)
    tok.padding_side = "left"  # decoder-only generation pads prompts on the left
    return tok
