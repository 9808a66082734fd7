"""`edgeft methods`: the registered methods with their options, types and defaults, read from each method's
pydantic option model (so the list cannot drift from the code)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgeft.cli.common import console


def option_rows(cls) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for every option of a method class."""
    from edgeft.methods.base import type_words

    rows = []
    for name, field in cls.Options.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append((name, type_words(field.annotation) + bounds(field), repr(default), field.description or ""))
    return rows


def bounds(field) -> str:
    """The range an option's value must lie in (' >= 1', ' > 0, < 1'), which the table did not say: `r=0` and
    `dropout=1.5` were refused by rules it never showed."""
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = [f"{sign} {getattr(m, key)}" for m in field.metadata for key, sign in signs.items() if hasattr(m, key)]
    return f" ({', '.join(parts)})" if parts else ""


def summary(cls) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def register(app: typer.Typer) -> None:
    @app.command("methods")
    def methods_cmd(name: Optional[str] = typer.Argument(None, help="show one method only")) -> None:
        """List the fine-tuning methods and their options (pass them as --option KEY=VALUE)."""
        from edgeft.methods import METHODS, get_method

        names = sorted(METHODS) if name is None else [get_method(name).name]
        for n in names:
            cls = METHODS[n]
            rows = option_rows(cls)
            console.print(f"[bold]{n}[/]: {escape(summary(cls))}", soft_wrap=True)
            if not rows:
                console.print("  (no options)")
                continue
            table = Table(show_edge=False, pad_edge=False)
            for col in ("option", "type", "default", "what it does"):
                table.add_column(col, overflow="fold")
            for row in rows:
                table.add_row(*map(escape, row))
            console.print(table)
            console.print()
