"""A plan as a rich table (who does what, predicted time, memory, energy)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeft.planner.plan import Plan


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def block_range(blocks) -> str:
    """Half-open [start, end) as the inclusive 'start..end-1' that plan and launch both print; '-' for none."""
    if not blocks or len(blocks) != 2 or blocks[1] <= blocks[0]:
        return "-"
    return f"{blocks[0]}..{blocks[1] - 1}"


def plan_table(plan: Plan) -> Table:
    # names come from the user's files: escaped, so `phone[/a]` or `lab[gpu]` print as written (rich reads [..]
    # as style)
    t = Table(title=escape(f"{plan.strategy} plan: {plan.model} / {plan.method} on {plan.cluster}"))
    for col in ("device", "role", "layers", "stage/server", "band share", "rate Mbit/s", "compute s", "comm s",
                "memory", "energy J"):
        t.add_column(col, justify="right" if col not in ("device", "role") else "left")
    for task in plan.tasks:
        where = str(task.stage) if task.stage is not None else (task.server or "")
        layers = block_range(task.layers)
        t.add_row(
            escape(task.device), task.role, layers, escape(where),
            f"{task.bandwidth_share:.3f}" if task.bandwidth_share else "-",
            f"{task.rate_bps / 1e6:.1f}" if task.rate_bps else "-", f"{task.compute_s:.3g}", f"{task.comm_s:.3g}",
            _fmt_bytes(task.memory_bytes) if task.memory_bytes else "-",
            f"{task.energy_j:.3g}" if task.energy_j is not None else "-",
        )
    return t


def summary_table(plan: Plan) -> Table:
    from edgeft.planner.explain import baseline_note

    t = Table(title="predicted, against baselines")
    t.add_column("plan / baseline")
    t.add_column("value", justify="right")
    t.add_column("what it counts")
    unit = plan.predicted.get("time_unit", "")
    from edgeft.planner.strategies import get

    key = get(plan.strategy).headline
    t.add_row(f"[bold]this plan[/] ({'objective' if key == 'objective' else 's per ' + unit})",
              f"[bold]{plan.predicted[key]:.4g}[/]", "the placement above")
    for name, val in plan.baselines.items():
        t.add_row(name, f"{val:.4g}" if val is not None else "does not fit", baseline_note(name))
    for k in ("energy_j", "cached_epoch_s", "iteration_s", "time_s"):
        if k in plan.predicted and k != key:
            t.add_row(f"predicted {k}", f"{plan.predicted[k]:.4g}", "")
    return t


def print_plan(plan: Plan, console: Console | None = None, idle: dict[str, str] | None = None) -> None:
    """The placement, then why each idle device is idle (`idle`: device -> reason), then the baselines."""
    console = console or Console()
    console.print(plan_table(plan))
    for device, reason in (idle or {}).items():
        console.print(f"[bold]{escape(device)}[/] idle: {escape(reason)}", soft_wrap=True, highlight=False)
    console.print(summary_table(plan))
