"""One record per compression step (size on disk, WikiText-2 perplexity, task metric, time taken) and
the JSON / Markdown / PNG views of a chain of steps."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class StepRecord:
    step: str  # e.g. "baseline", "gptq", "sparsegpt", "merge", "export-gguf"
    label: str  # human-readable variant, e.g. "GPTQ 4-bit g128"
    options: dict = field(default_factory=dict)
    size_bytes: int | None = None  # weight files on disk
    wikitext2_ppl: float | None = None
    task: str | None = None
    task_metric_name: str | None = None
    task_metric: float | None = None
    compress_seconds: float | None = None
    eval_seconds: float | None = None
    params: int | None = None  # parameters the model holds (after structured pruning: fewer)
    nonzero_params: int | None = None  # non-zero weights in the blocks' linear layers
    path: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def write_report(records: list[StepRecord | dict], out_dir: str | Path, title: str = "compression") -> Path:
    """compress_report.json + .md + .png in out_dir; returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r.to_json() if isinstance(r, StepRecord) else r for r in records]
    path = out_dir / "compress_report.json"
    path.write_text(json.dumps({"title": title, "steps": rows}, indent=2, default=float))
    (out_dir / "compress_report.md").write_text(markdown_table(rows))
    plot_records(rows, out_dir / "compress_report.png", title)
    return path


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def markdown_table(rows: list[dict]) -> str:
    lines = ["| step | size (MB) | WikiText-2 ppl | task metric | compress (s) | eval (s) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        size = r["size_bytes"] / 1e6 if r.get("size_bytes") else None
        metric = (f"{r['task']} {r['task_metric_name']} {r['task_metric']:.4f}"
                  if r.get("task_metric") is not None else "–")
        lines.append(f"| {r['label']} | {_fmt(size, '.1f')} | {_fmt(r.get('wikitext2_ppl'), '.3f')} | {metric} | "
                     f"{_fmt(r.get('compress_seconds'), '.1f')} | {_fmt(r.get('eval_seconds'), '.1f')} |")
    return "\n".join(lines) + "\n"


def plot_records(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["label"] for r in rows]
    sizes = [(r.get("size_bytes") or 0) / 1e6 for r in rows]
    ppl = [r.get("wikitext2_ppl") or 0 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.1 * len(rows) + 4), 4.2))
    axes[0].barh(labels, sizes, color="#4c72b0")
    axes[0].set_xlabel("weights on disk (MB)")
    axes[1].barh(labels, ppl, color="#dd8452")
    axes[1].set_xlabel("WikiText-2 perplexity (lower is better)")
    for ax, vals, fmt in ((axes[0], sizes, "{:.0f}"), (axes[1], ppl, "{:.2f}")):
        for y, v in enumerate(vals):
            if v:
                ax.text(v, y, " " + fmt.format(v), va="center", fontsize=8)
        ax.invert_yaxis()
    axes[1].set_yticklabels([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
