"""Leftovers of the last launch review, each a fault a user could meet: see the docstrings."""

from __future__ import annotations


def test_a_fill_first_plan_without_cached_epoch_figures_prints_no_empty_figure():
    """Without a per-epoch figure on the cache (no measured cached step), the plan printed
    'cache fill ... at most 3.2 s, then  s per epoch on the cache'."""
    from types import SimpleNamespace

    from edgeft.runtime.run import LaunchConfig, describe_plan

    plan = SimpleNamespace(layout={"stages": [{"ranks": [0], "shares": [1.0], "blocks": [0, 6]}]},
                           predicted={"epoch_s": 3.2}, ranks=[{"name": "p1", "kind": "device"}])
    text = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, train={"epochs": 2}), True)
    assert "predicted: cache fill (forward-only pipeline) at most 3.2 s" in text
    assert "then" not in text and " s per epoch" not in text
    plan.predicted["later_epochs_s"] = [1.25, 1.5]
    text = describe_plan(plan, LaunchConfig(cluster="c.yaml", task={"name": "sst2"}, train={"epochs": 2}), True)
    assert "at most 3.2 s, then 1.2, 1.5 s per epoch on the cache" in text


def test_launch_refuses_an_input_longer_than_an_encoders_positions_before_the_run_folder(tmp_path, sst2_bert):
    """finetune refused --max-length beyond an encoder's position table; launch ran on and a long row stopped a
    worker mid-epoch with a tensor-size RuntimeError from inside BERT's embeddings."""
    import pytest

    from edgeft.errors import ConfigError
    from edgeft.runtime.run import LaunchConfig, launch

    cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(sst2_bert), method="lora",
                       strategy="deft", out=str(tmp_path / "run"),
                       task={"name": "sst2", "train_samples": 16, "max_length": 300}, train={"epochs": 1})
    with pytest.raises(ConfigError, match=r"--max-length 300 .* has 256 positions.*give --max-length 256 or less"):
        launch(cfg)
    assert not (tmp_path / "run").exists()


def test_launch_refuses_lm_text_shorter_than_one_block(tmp_path, tiny_word_llama):
    """A language-modelling dev text shorter than one --max-length block gave no block to score: the launch
    reported a dev perplexity over no tokens (finetune refuses it)."""
    import pytest

    from edgeft.errors import DataError
    from edgeft.runtime.run import LaunchConfig, launch

    cfg = LaunchConfig(cluster="examples/clusters/four-phones.yaml", model=str(tiny_word_llama), method="lora",
                       strategy="deft", out=str(tmp_path / "run"),
                       task={"name": "shakespeare", "train_samples": 100, "dev_samples": 1, "max_length": 64},
                       train={"epochs": 1}, emulate_compute=False)
    with pytest.raises(DataError, match=r"the dev text is \d+ tokens, less than one block of --max-length 64"):
        launch(cfg)
    assert not (tmp_path / "run").exists()


def test_launch_messages_carry_no_markup_since_the_cli_prints_them_escaped():
    """`make run` printed '[yellow]warning:[/] --max-length 48 shortened ...' and '[yellow]lost device phone-b'
    literally: the CLI escapes every message (a path or a reason may hold brackets), so none may carry markup."""
    import inspect
    import re

    from edgeft.runtime import launcher, run

    for module in (run, launcher):
        said = re.findall(r"say\(f?\"([^\"]*)\"", inspect.getsource(module))
        assert said and not [s for s in said if re.search(r"\[/?(yellow|red|bold|green)\]|\[/\]", s)], said
