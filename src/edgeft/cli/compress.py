"""`edgeft compress` (merge / GPTQ / RTN / SparseGPT / magnitude / structured prune / GKD distil) and
`edgeft export` (safetensors, GGUF for llama.cpp)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.markup import escape

from edgeft.cli.common import console, stops_cleanly
from edgeft.config import parse_options
from edgeft.errors import ConfigError


def _progress():
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console)

    def factory(description: str, total: int):
        task_id = progress.add_task(description, total=total, info="")

        def advance(loss=None):
            progress.update(task_id, advance=1, info=f"loss {loss:.4f}" if loss is not None else "")

        return advance

    return progress, factory


def show_records(records: list[dict], out: str) -> None:
    table = Table(title=f"compression steps · {out}")
    for col in ("step", "size (MB)", "WikiText-2 ppl", "task metric", "time (s)"):
        table.add_column(col, justify="left" if col == "step" else "right")
    for r in records:
        size = f"{r['size_bytes'] / 1e6:.1f}" if r.get("size_bytes") else "–"
        ppl = f"{r['wikitext2_ppl']:.3f}" if r.get("wikitext2_ppl") else "–"
        metric = f"{r['task_metric_name']} {r['task_metric']:.4f}" if r.get("task_metric") is not None else "–"
        secs = f"{r['compress_seconds']:.1f}" if r.get("compress_seconds") is not None else "–"
        table.add_row(r["label"], size, ppl, metric, secs)
    console.print(table)
    console.print(escape(f"model folder and report: {out}"))


def _refuse_flag_and_option(flags: dict, options: dict) -> None:
    """`--bits 4 --option bits=8` names one option twice: the --option value used to win without a word."""
    for key, value in flags.items():
        if value is not None and key in options and options[key] != value:
            raise ConfigError(f"--{key.replace('_', '-')} {value} and --option {key}={options[key]} disagree; "
                              "give one of them")


def register(app: typer.Typer) -> None:
    @app.command()
    def compress(
        model: Optional[str] = typer.Option(None, help="alias, model folder, or the output folder of an earlier "
                                                       "compress step"),
        adapter: Optional[str] = typer.Option(None, help="adapter folder from edgeft finetune (merged first)"),
        method: Optional[str] = typer.Option(None, help="merge|gptq|rtn|sparsegpt|magnitude|prune|distill"),
        bits: Optional[int] = typer.Option(None, help="gptq/rtn: 2, 4 or 8"),
        group_size: Optional[int] = typer.Option(None, help="gptq/rtn: columns per scale (-1: per row)"),
        sparsity: Optional[float] = typer.Option(None, help="sparsegpt/magnitude: fraction of weights removed"),
        pattern: Optional[str] = typer.Option(None, help="sparsegpt/magnitude: N:M pattern such as 2:4"),
        ratio: Optional[float] = typer.Option(None, help="prune: fraction of KV groups / MLP channels removed"),
        teacher: Optional[str] = typer.Option(None, help="distill: teacher model (usually the fine-tuned base)"),
        teacher_adapter: Optional[str] = typer.Option(None, help="distill: the teacher's adapter"),
        option: Optional[list[str]] = typer.Option(None, help="method option KEY=VALUE (repeatable), e.g. "
                                                              "act_order=false"),
        calib_task: Optional[str] = typer.Option(None, help="calibration data (default: the adapter's task, "
                                                            "else wikitext2)"),
        calib_samples: Optional[int] = None,
        calib_seq_len: Optional[int] = None,
        eval_task: Optional[str] = typer.Option(None, help="task metric to report (default: the adapter's task; "
                                                           "'none' to skip)"),
        eval_wikitext_windows: Optional[int] = typer.Option(None, help="WikiText-2 test windows for perplexity "
                                                                       "(0: skip)"),
        eval_seq_len: Optional[int] = None,
        dtype: Optional[str] = typer.Option(None, help="storage of dense tensors: float16|bfloat16|float32"),
        seed: Optional[int] = None,
        out: Optional[str] = typer.Option(None, help="output folder"),
        config: Optional[Path] = typer.Option(None, help="YAML file with the keys of CompressConfig"),
        overwrite: bool = typer.Option(False, help="replace an earlier compress output in --out"),
    ):
        """Compress a (fine-tuned) model one step and measure it: size, WikiText-2 perplexity, task metric, time."""
        from edgeft.compress.pipeline import CompressConfig, claim_output, run_compress

        step_options = {"bits": bits, "group_size": group_size, "sparsity": sparsity, "pattern": pattern,
                        "ratio": ratio, "teacher": teacher, "teacher_adapter": teacher_adapter}
        options = parse_options(option)
        _refuse_flag_and_option(step_options, options)
        cfg = CompressConfig.load(config, {
            "model": model, "adapter": adapter, "method": method, "calib_task": calib_task,
            "calib_samples": calib_samples, "calib_seq_len": calib_seq_len, "eval_task": eval_task,
            "eval_wikitext_windows": eval_wikitext_windows, "eval_seq_len": eval_seq_len, "dtype": dtype, "seed": seed,
            "out": out, **{f"options.{k}": v for k, v in step_options.items()}, "options": options or None})
        claimed = claim_output(cfg, overwrite)
        progress, factory = _progress()
        with stops_cleanly(f"{cfg.out} is as it was before this run; run the command again to compress"), \
                claimed, progress:
            result = run_compress(cfg, progress_factory=factory, log=lambda m: progress.console.print(escape(m)))
        show_records(result["records"], result["out"])

    @app.command()
    def export(
        model: str = typer.Option(..., help="alias, model folder or compressed folder"),
        out: str = typer.Option(..., help="output .gguf file (or folder for safetensors)"),
        format: str = typer.Option("gguf", "--format", help="gguf|safetensors"),
        gguf_type: str = typer.Option("auto", help="auto|f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1 (auto: GPTQ codes "
                                                   "as they are, refused if they fit no ggml type; f16 for an "
                                                   "unquantised model)"),
        embedding_type: Optional[str] = typer.Option(None, help="gguf: type of the token embedding / output "
                                                                "layer (default: q4_0 beside 4-bit GPTQ, q8_0 "
                                                                "beside q4_*/q5_*)"),
        adapter: Optional[str] = typer.Option(None, help="adapter folder to merge first"),
        dtype: str = typer.Option("float16", help="safetensors: float16|bfloat16|float32"),
        check: bool = typer.Option(False, help="gguf: load it in llama.cpp and compare perplexity/generation with "
                                               "PyTorch"),
        check_windows: int = typer.Option(8, help="WikiText-2 windows for --check"),
        seq_len: int = typer.Option(512, help="window length for --check"),
        overwrite: bool = typer.Option(False, help="replace an earlier export at --out"),
    ):
        """Write the deployable model: a Hugging Face safetensors folder or a GGUF file llama.cpp runs."""
        from edgeft.compress.export import claim_export, export_model

        claim_export(model, adapter, out, format, gguf_type, overwrite)
        with stops_cleanly(f"{out} is as it was before this run; run the command again to export"), \
                console.status("exporting"):
            info = export_model(model, out, format, gguf_type, adapter, dtype, check, check_windows, seq_len,
                                embed_type=embedding_type)
        table = Table(title=f"export · {info['path']}")
        table.add_column("")
        table.add_column("value", justify="right")
        table.add_row("size (MB)", f"{info['bytes'] / 1e6:.1f}")
        if "bits_per_weight" in info:
            table.add_row("bits per weight: tensor data / whole file",
                          f"{info['bits_per_weight']:.2f} / {info['file_bits_per_weight']:.2f}")
        for key in ("arch", "gguf_type", "tensor_types", "embedding_type", "tokenizer_pre", "native_gptq_tensors",
                    "seconds"):
            if key in info:
                table.add_row(key, f"{info[key]:.1f}" if isinstance(info[key], float) else str(info[key]))
        c = info.get("check")
        if c:
            for task, t in c["tasks"].items():
                table.add_row(f"{task} perplexity: PyTorch / llama.cpp",
                              f"{t['torch_perplexity']:.3f} / {t['llama_cpp_perplexity']:.3f} "
                              f"({100 * t['relative_difference']:+.2f}%)")
            table.add_row("greedy tokens agreeing", f"{c['greedy_tokens_agreeing']}/{c['greedy_tokens']}")
            table.add_row("llama.cpp says", repr(c["llama_cpp_greedy"]))
            table.add_row("tokenizer identical", str(c["tokenizer"]["identical"]))
        console.print(table)
