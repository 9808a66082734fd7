"""`edgeft plan` and `edgeft profile`: plan a collaborative run; measure blocks on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from edgeft.cli.common import console
from edgeft.errors import ConfigError
from edgeft.paths import file_in_the_way


def _at_least_one(*given: tuple[str, Optional[int]]) -> None:
    """Counts (batch, length, samples, ...) given by option name: each, where given, at least 1."""
    for flag, value in given:
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, not {value}")


def _check_profile_out(out: Path) -> None:
    """`profile --out`, writable before the measurement: a folder or a file in the way was found only after it
    (IsADirectoryError, FileExistsError), and the profile was lost."""
    if out.is_dir():
        raise ConfigError(f"{out}: --out names a folder; profile writes one JSON file. Give a file name, e.g. "
                          f"--out {out / 'profile.json'}")
    in_the_way = file_in_the_way(out, itself=False)
    if in_the_way is not None:
        raise ConfigError(f"--out {out}: {in_the_way} is a file, not a folder. Choose another --out.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot make its folder ({err.strerror}). Choose another --out.") from None


def _check_numbers(batch: int, seq_len: int, samples: int, blocks: Optional[int], w_t: float, w_e: float,
                   w_s: float) -> None:
    """`edgeft plan`'s numbers, refused by option name before any solver sees them (a solver fed 0 or -1
    clamped it silently or stopped with a traceback)."""
    _at_least_one(("--batch", batch), ("--seq-len", seq_len), ("--samples", samples), ("--blocks", blocks))
    if not w_t > 0:
        raise ConfigError(f"--w-t (split: weight of delay) must be greater than 0, not {w_t:g}")
    for flag, value in (("--w-e", w_e), ("--w-s", w_s)):
        if not value >= 0:
            raise ConfigError(f"{flag} must be 0 or more, not {value:g}")


# options that only one strategy's planner reads
STRATEGY_OPTIONS = {"blocks": "deft", "samples": "hybrid", "w_t": "split", "w_e": "split", "w_s": "split"}


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set option `name` (command line or environment), not its default. Compared by the source's
    name: typer 0.2x carries its own copy of click (`typer._click`), whose ParameterSource is not click's enum, so
    `is click.core.ParameterSource.DEFAULT` was False for every default there and each option read as given."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _check_strategy_options(ctx: typer.Context, strategy: str) -> None:
    """An option given for another strategy's planner is refused: it would change nothing in this plan."""
    given = [name for name, only in STRATEGY_OPTIONS.items() if only != strategy and _given(ctx, name)]
    if given:
        raise ConfigError("; ".join(f"--{name.replace('_', '-')} is only for --strategy {STRATEGY_OPTIONS[name]}, "
                                    f"not {strategy}" for name in given))


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        ctx: typer.Context,
        cluster: Path = typer.Option(..., "--cluster", help="cluster YAML (see examples/clusters/)"),
        model: str = typer.Option(..., "--model", help="preset (minilm-l6, smollm2-135m, roberta-base, llama-7b-paper) or a config.json / model dir"),
        strategy: str = typer.Option("deft", "--strategy", help="deft | split | hybrid"),
        method: str = typer.Option("lora", "--method", help="full | lora | bitfit | pac"),
        batch: int = typer.Option(8, "--batch"),
        seq_len: int = typer.Option(128, "--seq-len"),
        blocks: Optional[int] = typer.Option(None, "--blocks", help="deft: parameter blocks (default min(layers, devices))"),
        samples: int = typer.Option(1000, "--samples", help="hybrid: training examples per epoch"),
        profile: Optional[Path] = typer.Option(None, "--profile", help="measured profile JSON from `edgeft profile`"),
        w_t: float = typer.Option(1.0, "--w-t", help="split: weight of delay"),
        w_e: float = typer.Option(1.0, "--w-e", help="split: weight of energy"),
        w_s: float = typer.Option(1.0, "--w-s", help="split: weight of the stability bound"),
        out: Path = typer.Option(Path("runs/plan"), "--out", help="directory for plan.json and the PNGs"),
        no_plots: bool = typer.Option(False, "--no-plots"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing plan.json in --out"),
    ) -> None:
        """Solve a placement, write plan.json, print it and draw placement.png / timeline.png."""
        from edgeft.planner import load_cluster, make_plan, resolve_arch
        from edgeft.planner.strategies import explain_idle
        from edgeft.planner.plot import plot_placement, plot_timeline
        from edgeft.planner.render import print_plan
        from edgeft.planner.split_model import SplitSettings
        from edgeft.runtime.placement import make_table

        from edgeft.methods.base import check_strategy
        from edgeft.planner.strategies import get as strategy_entry

        _check_numbers(batch=batch, seq_len=seq_len, samples=samples, blocks=blocks, w_t=w_t, w_e=w_e, w_s=w_s)
        strategy_entry(strategy, ConfigError)  # a typo is named as one, before the method's pairing is judged
        check_strategy(method, strategy)  # a plan `edgeft launch` could not run
        _check_strategy_options(ctx, strategy)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out}: --out names a file; plan writes a folder (plan.json and the PNGs). Choose "
                              "another --out.")
        if (out / "plan.json").exists() and not overwrite:
            raise ConfigError(f"{out / 'plan.json'} already exists: pass --overwrite to replace it, or choose "
                              "another --out.")
        spec = load_cluster(cluster)
        arch = resolve_arch(model)
        longest = max([seq_len] + [d.seq_len or 0 for d in spec.devices])
        if longest > arch.max_positions:
            raise ConfigError(f"--seq-len {longest} (or a device's seq_len) is longer than {arch.name} reads "
                              f"({arch.max_positions} positions): plan at most {arch.max_positions}")
        table = make_table(arch, method, batch, seq_len, {})  # as `edgeft launch` plans: lora's real targets
        wl = table.workload
        if profile is not None:
            from edgeft.measure.profile import load_profile, profile_to_table

            table = profile_to_table(load_profile(profile), arch, wl)
        settings = SplitSettings(batch=batch, hidden=arch.hidden_size, layers=arch.num_layers, w_t=w_t, w_e=w_e, w_s=w_s)
        plan = make_plan(spec, arch, wl, strategy, table=table, num_blocks=blocks, samples=samples, split_settings=settings)
        out.mkdir(parents=True, exist_ok=True)
        plan.to_json(out / "plan.json")
        print_plan(plan, console, explain_idle(plan, spec, table))
        console.print(escape(f"wrote {out / 'plan.json'}"))
        if not no_plots:
            pngs = plot_placement(plan, out / "placement.png"), plot_timeline(plan, out / "timeline.png")
            console.print(escape(f"wrote {pngs[0]}, {pngs[1]}"))

    @app.command("profile")
    def profile_cmd(
        model: str = typer.Option(..., "--model", help="minilm-l6, smollm2-135m or a local model dir"),
        method: str = typer.Option("lora", "--method", help="full | lora | pac"),
        batch: int = typer.Option(4, "--batch"),
        seq_len: int = typer.Option(128, "--seq-len"),
        reps: int = typer.Option(3, "--reps", help="timed repetitions per block (median kept)"),
        out: Path = typer.Option(Path("runs/profile.json"), "--out"),
    ) -> None:
        """Measure forward/backward time, FLOPs and saved activations per block on this machine."""
        from edgeft.measure.profile import compare_table, out_of_memory, profile_model

        _at_least_one(("--reps", reps), ("--batch", batch), ("--seq-len", seq_len))
        _check_profile_out(out)
        try:
            prof = profile_model(model, method=method, batch=batch, seq_len=seq_len, reps=reps)
        except (MemoryError, RuntimeError) as err:
            if not out_of_memory(err):
                raise
            raise ConfigError(f"--batch {batch} --seq-len {seq_len}: {model}'s blocks do not fit in this machine's "
                              f"memory ({str(err).splitlines()[0][:200]}). Profile a smaller --batch (a plan "
                              "rescales a profile's batch linearly) or --seq-len.") from None
        out.write_text(json.dumps(prof, indent=2))
        console.print(compare_table(prof))
        console.print(escape(f"wrote {out}"))
