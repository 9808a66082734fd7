"""The acceptance paths on the real SmolLM2-135M (slow: minutes on 2 cores)."""

import os

import pytest

from edgeft.compress.evaluation import lm_windows, perplexity_of_windows
from edgeft.compress.export import export_model
from edgeft.compress.pipeline import CompressConfig, run_compress
from edgeft.compress.store import load_compressed

pytestmark = pytest.mark.slow


def test_finetuned_smollm2_runs_in_llama_cpp_within_5_percent_of_pytorch(tmp_path):
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python must be installed in CI (see docs/compress.md)")
        pytest.skip("llama-cpp-python is not installed (see docs/compress.md)")
    from edgeft.train.recipe import FinetuneConfig, run_finetune

    run_finetune(FinetuneConfig(model="smollm2-135m", method="lora", eval_before=False, out=str(tmp_path / "ft"),
                                task={"name": "shakespeare", "train_samples": 24, "dev_samples": 4, "max_length": 64},
                                train={"epochs": 1, "batch_size": 8, "lr": 2e-3}))
    info = export_model("smollm2-135m", tmp_path / "ft-f16.gguf", "gguf", "f16", adapter=str(tmp_path / "ft" / "adapter"),
                        check=True, check_windows=2, seq_len=256)
    check = info["check"]
    assert set(check["tasks"]) == {"wikitext2", "shakespeare"}
    for task in check["tasks"].values():
        assert abs(task["relative_difference"]) < 0.05
    assert check["tokenizer"]["identical"]
    assert check["greedy_tokens_agreeing"] >= 4 and check["llama_cpp_greedy"].strip()


def test_gptq_4bit_g128_on_smollm2_halves_rtn_perplexity_loss(tmp_path):
    """GPTQ (act-order, guided, norm-tweaked: the defaults) must lose at most 60% of what round-to-nearest
    loses, and stay within 15%.

    The issue's 10% target is met only narrowly on this model (docs/benchmarks_compress.md: +9.7% on 32
    windows of 512, +10.3% without norm tweaking, +17.8% without guidance either), too close to assert on
    this test's 4 short windows; this test guards GPTQ's error feedback working. 8 calibration sequences (16
    until 2026-12-06) keep the suite's time: GPTQ then loses 44% of what RTN loses (28% with 16); with the column
    loop's error feedback removed it loses 79%, so the 60% bound still tells the two apart.
    """
    common = dict(model="smollm2-135m", calib_samples=8, calib_seq_len=256, eval_wikitext_windows=4,
                  eval_seq_len=256, eval_task="none", dtype="float32")
    g128 = {"bits": 4, "group_size": 128, "sym": False, "embedding": False}  # the setting this test was written for
    res = run_compress(CompressConfig(method="gptq", options=g128, out=str(tmp_path / "q"), **common),
                       log=lambda m: None)
    reference, quantised = res["records"]
    rtn_opts = {k: v for k, v in g128.items() if k != "embedding"}
    rtn = run_compress(CompressConfig(method="rtn", options=rtn_opts, out=str(tmp_path / "r"), eval_before=False,
                                      **common), log=lambda m: None)["records"][-1]
    base = reference["wikitext2_ppl"]
    assert quantised["wikitext2_ppl"] - base <= 0.6 * (rtn["wikitext2_ppl"] - base)
    assert quantised["wikitext2_ppl"] < 1.15 * base
    assert quantised["size_bytes"] < 0.4 * reference["size_bytes"]
    model, tok, _ = load_compressed(tmp_path / "q")  # what was stored is what was measured
    ppl = perplexity_of_windows(model, lm_windows("wikitext2", tok, 256, 4))["perplexity"]
    assert ppl == pytest.approx(quantised["wikitext2_ppl"], rel=1e-4)
