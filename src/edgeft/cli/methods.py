"""`edgeft methods`: the registered methods with their options, types and defaults, read from each method's
pydantic option model (so the list cannot drift from the code)."""

from __future__ import annotations

import types
import typing
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgeft.cli.common import console


def _type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))


def option_rows(cls) -> list[tuple[str, str, str, str]]:
    """(name, type, default, description) for every option of a method class."""
    rows = []
    for name, field in cls.Options.model_fields.items():
        default = field.get_default(call_default_factory=True)
        rows.append((name, _type_name(field.annotation), repr(default), field.description or ""))
    return rows


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
