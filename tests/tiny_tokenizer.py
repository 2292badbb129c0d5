"""A small byte-level BPE tokenizer with ChatML special tokens, trained in-process (a test helper).

For tests that need real token boundaries but not a real vocabulary: it loads in milliseconds."""

from __future__ import annotations

from functools import cache

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@cache
def tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(
        ["hello hi user assistant system tool " * 20, "the quick brown fox\n" * 20], trainer
    )
    return tok.to_str()
