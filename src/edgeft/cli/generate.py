"""`edgeft generate` and `edgeft chat`: talk to a base model, base + adapter, a compressed folder or a GGUF."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from typing_extensions import Annotated

from edgeft.cli.common import shared_options

# What to talk to and how to sample: the same options for generate and chat.
TALK_OPTIONS = {
    "model": (Optional[str], typer.Option(None, help="alias, model folder, or a merged/compressed folder")),
    "adapter": (Optional[Path], typer.Option(None, help="adapter folder written by edgeft finetune (on --model; "
                                                        "without it, on the backbone it was trained on)")),
    "gguf": (Optional[Path], typer.Option(None, help="a GGUF file (edgeft export), run by llama.cpp")),
    "system": (Optional[str], typer.Option(None, help="system message (when the chat template takes one)")),
    "top_p": (float, typer.Option(0.9, help="nucleus sampling mass (with --temperature > 0)")),
    "seed": (int, typer.Option(0, help="sampling seed")),
    "device": (str, typer.Option("auto", help="auto|cpu|cuda (transformers models)")),
    "context": (Optional[int], typer.Option(None, help="llama.cpp's context in tokens (--gguf): prompt and answer "
                                                       "must fit; default 2048, or the model's own when shorter")),
}


def _open(talk: dict, max_new_tokens: int, temperature: float):
    from edgeft.generate import Sampling, open_talker

    s = Sampling(max_new_tokens, temperature, talk["top_p"], talk["seed"])
    talker = open_talker(talk["model"], talk["adapter"], talk["gguf"], talk["device"], talk["context"])
    talker.check(s)
    return talker, s


EXIT_WORDS = {"/exit", "/quit"}


def _write(pieces) -> str:
    text = []
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(text)


def _start(system: Optional[str]) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def register(app: typer.Typer) -> None:
    @app.command()
    @shared_options(TALK_OPTIONS, into="talk")
    def generate(
        prompt: Annotated[str, typer.Option(help="the prompt (a user turn, or plain text with --raw)")],
        raw: Annotated[bool, typer.Option(help="feed the prompt as is, without the chat template")] = False,
        max_new_tokens: int = 128,
        temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
        talk: dict = None,
    ):
        """Generate an answer to one prompt, streaming tokens as they come."""
        from edgeft.errors import ConfigError

        if not prompt.strip():  # checked before the model loads (an unset shell variable, say)
            raise ConfigError("--prompt is empty: give the text to answer (or, with --raw, to continue).")
        if raw and talk["system"]:  # it was dropped without a word
            raise ConfigError("--system goes into the chat template, which --raw leaves out: put its text at the "
                              "start of --prompt, or drop --raw.")
        talker, s = _open(talk, max_new_tokens, temperature)
        if raw:
            _write(talker.complete(prompt, s))
        else:
            _write(talker.chat(_start(talk["system"]) + [{"role": "user", "content": prompt}], s))

    @app.command()
    @shared_options(TALK_OPTIONS, into="talk")
    def chat(
        max_new_tokens: int = 256,
        temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.7,
        talk: dict = None,
    ):
        """Talk with a model in the terminal (its chat template, streamed). Ctrl-C stops an answer; /reset forgets,
        /exit or Ctrl-D quits."""
        from rich.console import Console
        from rich.markup import escape

        from edgeft.errors import ConfigError
        from edgeft.generate import TemplateRefused

        talker, s = _open(talk, max_new_tokens, temperature)
        messages = _start(talk["system"])
        sys.stdout.write("chat: Ctrl-C stops an answer, /reset forgets the conversation, /exit or Ctrl-D quits.\n")
        while True:
            try:
                line = input("you> ").strip()
            except (EOFError, KeyboardInterrupt):
                sys.stdout.write("\n")
                return
            if line in EXIT_WORDS:
                return
            if line == "/reset":
                messages = _start(talk["system"])
                continue
            if not line:
                continue
            messages.append({"role": "user", "content": line})
            sys.stdout.write("model> ")
            try:
                answer = _write(talker.chat(messages, s))
            except KeyboardInterrupt:  # Ctrl-C stops this answer (it ended the whole chat); the chat goes on
                sys.stdout.write("\n[stopped: this turn is forgotten]\n")
                messages.pop()
                continue
            except ConfigError as err:  # a turn too long for the context: say so and keep the conversation
                sys.stdout.write("\n")
                if isinstance(err, TemplateRefused) and err.system:  # no turn would pass with this --system
                    raise
                Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
                messages.pop()
                continue
            messages.append({"role": "assistant", "content": answer})
