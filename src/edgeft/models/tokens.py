"""Facts about a tokenizer that more than one part of edgeft reads."""

from __future__ import annotations


def adds_bos(tokenizer) -> bool:
    """Whether encoding text puts the tokenizer's BOS token in front (a post-processor setting, not the vocabulary:
    the same SmolLM2 vocabulary adds one or not depending on how transformers built it)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer.encode("a")[:1] == [bos]
