"""`edgeft bench ...`: benchmarks that compare methods on this machine (the scripts live in bench/)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import typer

from edgeft.errors import ConfigError

bench_app = typer.Typer(help="Benchmarks: methods against each other on this machine.", no_args_is_help=True)


def bench_script(name: str):
    """Load bench/<name>.py from the source checkout (benchmarks ship with the repository, not the wheel)."""
    path = Path(__file__).resolve().parents[3] / "bench" / f"{name}.py"
    if not path.is_file():
        raise ConfigError(f"{path}: benchmark script not found. The benchmarks live in the source checkout's "
                          "bench/ folder; run edgeft from an editable install of the repository.")
    spec = importlib.util.spec_from_file_location(f"edgeft_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")

    @bench_app.command("pac")
    def pac(
        model: str = typer.Option("smollm2-135m", help="alias, local folder or hub id (tokenizer for --random-llama)"),
        random_llama: Optional[str] = typer.Option(None, help="timing only: random-weight Llama (1b, smollm2-135m-shape)"),
        task: str = "sst2",
        train_samples: int = 4000,
        dev_samples: Optional[int] = None,
        holdout: Optional[int] = typer.Option(None, help="score on N held-out training examples (tuning)"),
        epochs: int = 5,
        batch_size: int = 16,
        max_length: int = 64,
        seed: int = 0,
        variants: str = typer.Option("full,lora,pac_nocache,pac_cache", help="comma-separated subset"),
        taps: Optional[str] = typer.Option(None, help="PAC tap set: all, every:K or i,j,k"),
        pac_option: Optional[list[str]] = typer.Option(None, help="PAC option KEY=VALUE (repeatable)"),
        lora_option: Optional[list[str]] = typer.Option(None, help="LoRA option KEY=VALUE (repeatable)"),
        lr: Optional[list[str]] = typer.Option(None, help="METHOD=LR, e.g. pac=5e-4 (repeatable)"),
        eval: str = typer.Option("last", help="dev evaluation after: last | each | none"),
        threads: Optional[int] = None,
        device: str = "auto",
        out: str = "bench/results/pac/pac_vs_baselines.json",
        label: str = "",
    ):
        """full vs lora vs pac (no cache) vs pac (cache): time per epoch, end-to-end, peak memory, accuracy."""
        argv = ["--model", model, "--task", task, "--train-samples", str(train_samples), "--epochs", str(epochs),
                "--batch-size", str(batch_size), "--max-length", str(max_length), "--seed", str(seed),
                "--variants", variants, "--eval", eval, "--device", device, "--out", out, "--label", label]
        for flag, value in (("--random-llama", random_llama), ("--dev-samples", dev_samples),
                            ("--holdout", holdout), ("--taps", taps), ("--threads", threads)):
            if value is not None:
                argv += [flag, str(value)]
        for flag, values in (("--pac-option", pac_option), ("--lora-option", lora_option), ("--lr", lr)):
            for v in values or []:
                argv += [flag, v]
        bench_script("pac_vs_baselines").main(argv)

    @bench_app.command("quality", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def quality(ctx: typer.Context):
        """PAC vs LoRA (and full) on SST-2, CoLA, MRPC, RTE, STS-B and user-file tasks: mean ± std over train
        seeds and PAC's gap to LoRA. Every option of bench/quality.py is passed on (--models, --tasks, --seeds,
        --holdout, --sweep, --pick, --jobs, --out, ...); `edgeft bench quality --help-script` lists them."""
        argv = ["--help" if a == "--help-script" else a for a in ctx.args]
        bench_script("quality").main(argv)
