"""A federated language-modelling run whose clients hold less text than one block is refused before Ray starts."""

from __future__ import annotations

import pytest

from edgeft.errors import DataError
from edgeft.federated.config import FederatedConfig


def _cfg(model, **kw) -> FederatedConfig:
    base = dict(algorithm="fedit", model=str(model), task="shakespeare", clients=3, rounds=1, train_samples=30,
                eval_samples=10, max_length=64, out="unused")
    return FederatedConfig(**{**base, **kw})


def test_a_client_share_shorter_than_one_block_is_named_before_the_rounds(tiny_word_llama):
    """Each round failed in the clients with numpy's 'a must be a positive integer' and the run ended in a server
    error about missing arrays, the dev perplexity nan."""
    from edgeft.federated.simulation import check_inputs

    check_inputs(_cfg(tiny_word_llama))  # 10 paragraphs a client: a few blocks of 64 each
    with pytest.raises(DataError, match=r"client 0's share of the text is \d+ tokens, less than one block of "
                                        r"--max-length 1024.*fewer --clients"):
        check_inputs(_cfg(tiny_word_llama, max_length=1024))
    with pytest.raises(DataError, match=r"the dev text is \d+ tokens, less than one block of --max-length 64"):
        check_inputs(_cfg(tiny_word_llama, eval_samples=1))
