"""Helpers shared by command modules: progress bars, wide tables, options shared by commands (configs are
loaded by edgeft.config)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.markup import escape


# Piped output (a log, CI, `| less`) gets wide lines instead of rich's 80 columns, so table cells stay whole.
PIPED_WIDTH = 200


def wide_console(**kwargs) -> Console:
    """A rich console that lays tables out PIPED_WIDTH wide when not writing to a terminal ($COLUMNS wins)."""
    found = Console(**kwargs)
    if found.is_terminal or "COLUMNS" in os.environ:
        return found
    return Console(width=PIPED_WIDTH, **kwargs)


console = wide_console()


def progress_bar(description: str):
    """A rich progress bar; returns (progress context, factory(total) -> advance(loss, note, steps))."""
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=console, transient=False)

    def factory(total: int):
        task_id = progress.add_task(description, total=total, info="")

        def advance(loss=None, note: str = "", steps: int = 1):
            info = " · ".join(x for x in (f"loss {loss:.4f}" if loss is not None else "", note) if x)
            progress.update(task_id, advance=steps, info=info)

        return advance

    return progress, factory


@contextmanager
def stops_cleanly(where: str):
    """Ctrl-C, SIGTERM or a closed terminal end the command through its `finally` blocks (a half-written output is
    removed, the earlier one stays) and say `where` things stand; exit status 128 + the signal."""
    from edgeft.processes import Interrupted, stop_on_signals

    try:
        with stop_on_signals():
            yield
    except Interrupted as stop:
        console.print(f"[yellow]{stop}[/]: {escape(where)}")
        raise typer.Exit(stop.exit_code) from None


def shared_options(options: dict[str, tuple], into: str):
    """Add the typer options in `options` ({name: (type, typer.Option)}) to a command, handed to it as one
    dict argument `into`: commands that take the same options declare them in one place."""
    import functools
    import inspect

    def decorate(fn):
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != into]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=typ)
                 for name, (typ, opt) in options.items()]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**{k: v for k, v in kwargs.items() if k not in options},
                      **{into: {k: kwargs[k] for k in options}})

        command.__signature__ = sig.replace(parameters=own + added)
        command.__annotations__ = {p.name: p.annotation for p in own + added}
        return command

    return decorate


# Your own data: the same options for finetune, eval, launch and federate, declared once.
DATA_OPTIONS = {
    "data_file": (Optional[str], typer.Option(None, help="your own data (jsonl/csv/tsv)")),
    "dev_file": (Optional[str], typer.Option(
        None, help="your own dev data (without it finetune splits off dev_fraction; eval scores all of --data-file)")),
    "task_kind": (Optional[str], typer.Option(None, help="classification|regression|generation|lm (own data; a "
                                                          ".txt/.md file is lm: plain text, one document a paragraph)")),
    "text_column": (Optional[str], typer.Option(None, help="text column (classification/regression; default text)")),
    "text2_column": (Optional[str], typer.Option(None, help="second text column of a pair task (default: text2 when the file has it)")),
    "label_column": (Optional[str], typer.Option(None, help="label column (default label)")),
    "instruction_column": (Optional[str], typer.Option(None, help="instruction column (generation; default instruction)")),
    "input_column": (Optional[str], typer.Option(None, help="optional input column (generation; default input)")),
    "response_column": (Optional[str], typer.Option(None, help="response column (generation; default response)")),
    "prompt_template": (Optional[str], typer.Option(
        None, help="what the model reads for each row of your classification/regression file, with {text} (and "
                   "{text2}); \\n is a new line. E.g. 'Premise: {text}\\nHypothesis: {text2}\\nDoes the premise "
                   "entail the hypothesis?' A question at the end helps PAC on a causal LM (it reads the last token)")),
    "label_words": (Optional[str], typer.Option(
        None, help="comma-separated words the LM head reads, one per label in the labels' sorted order (numbers "
                   "by value; own classification file; default: the label names)")),
}


def data_task_keys(options: dict) -> dict:
    """DATA_OPTIONS values as TaskConfig keys (unset ones left out): a prompt's typed \\n becomes a new line,
    the label words a list."""
    keys = {("kind" if k == "task_kind" else k): v for k, v in options.items() if v is not None}
    if "prompt_template" in keys:
        keys["prompt_template"] = keys["prompt_template"].replace("\\n", "\n")
    if "label_words" in keys:
        keys["label_words"] = [w.strip() for w in keys["label_words"].split(",")]
    return keys
