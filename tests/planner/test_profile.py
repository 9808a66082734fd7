"""`edgeft profile` measures the blocks of an encoder as of a decoder (it loaded MiniLM with a head it does not build)."""

import pytest

from edgeft.measure.profile import profile_model
from tiny_models import make_tiny_model


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_profile_loads_each_family_with_a_head_it_has(tmp_path, family):
    folder = make_tiny_model(tmp_path / family, family, layers=2)
    prof = profile_model(str(folder), method="lora", batch=1, seq_len=8, reps=1)
    assert len(prof["blocks"]) == 2


@pytest.mark.slow
def test_profile_of_the_readmes_encoder_alias():
    """README: `edgeft profile --model minilm-l6 --method lora` (before: "head='classification' is not a head
    edgeft builds")."""
    prof = profile_model("minilm-l6", method="lora", batch=1, seq_len=8, reps=1)
    assert len(prof["blocks"]) == 6


def test_profile_refuses_shapes_it_cannot_run_by_option_name(tmp_path):
    """--batch 0, --seq-len 0 and a --seq-len past BERT's positions ended in torch RuntimeError tracebacks."""
    from typer.testing import CliRunner

    from edgeft.cli.app import build_app
    from edgeft.errors import ConfigError

    for flag in ("--batch", "--seq-len"):
        res = CliRunner().invoke(build_app(), ["profile", "--model", "minilm-l6", flag, "0"])
        assert isinstance(res.exception, ConfigError) and f"{flag} must be at least 1, not 0" in str(res.exception)
    folder = make_tiny_model(tmp_path / "bert", "bert", layers=2)
    with pytest.raises(ConfigError, match=r"--seq-len 600: .* has learned positions for 512 tokens"):
        profile_model(str(folder), method="lora", batch=1, seq_len=600, reps=1)
