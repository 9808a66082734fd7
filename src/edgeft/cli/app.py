"""Builds the typer app from the command modules and turns EdgeftError into a clean message."""

import importlib
import sys

import typer
from rich.console import Console
from rich.markup import escape

from edgeft.errors import EdgeftError
from edgeft.quiet import quiet_libraries

app = typer.Typer(
    help="edgeft: fine-tune language models across edge devices and an edge server.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Each module defines `register(app)`. Add a module here when you add a command group.
COMMAND_MODULES = [
    "edgeft.cli.finetune",
    "edgeft.cli.plan",
    "edgeft.cli.bench",
    "edgeft.cli.launch",
    "edgeft.cli.compress",
    "edgeft.cli.federate",
    "edgeft.cli.generate",
    "edgeft.cli.methods",
]

_registered = False


def build_app() -> typer.Typer:
    global _registered
    if not _registered:
        for name in COMMAND_MODULES:
            importlib.import_module(name).register(app)
        _registered = True
    return app


def main() -> None:
    quiet_libraries()
    from edgeft.cli.common import PIPED_WIDTH, console

    if console.width == PIPED_WIDTH and not console.is_terminal:  # --help piped: as wide as the tables
        import typer.rich_utils

        typer.rich_utils.MAX_WIDTH = typer.rich_utils.MAX_WIDTH or PIPED_WIDTH
    try:
        build_app()()
    except EdgeftError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(2)
