"""Talk to a model you tuned: a base model, base + adapter, a merged/compressed folder, or a GGUF export.

Tokens stream as they are made (transformers' TextIteratorStreamer in a generation thread; llama.cpp's
streamed completions for GGUF), so `edgeft generate` and `edgeft chat` print while the model works.
Prompts use the model's chat template; a model without one gets the Alpaca layout edgeft fine-tunes
with (data/features.py), so an adapter sees the prompt format it was trained on.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from edgeft.config import SEED_MAX
from edgeft.errors import ConfigError, ModelError


@dataclass
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy (deterministic)
    top_p: float = 0.9
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1.")
        if not math.isfinite(self.temperature) or self.temperature < 0:  # nan was greedy, inf uniform noise
            raise ConfigError(f"--temperature {self.temperature}: must be 0 (greedy) or a positive number.")
        if not 0 <= self.seed <= SEED_MAX:  # llama.cpp reads -1 as "a random seed": not reproducible there
            raise ConfigError(f"--seed {self.seed}: must be between 0 and {SEED_MAX}.")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p {self.top_p}: must be in (0, 1].")


def alpaca_chat(messages: list[dict]) -> str:
    """The layout of data/features.format_prompt, over several turns (a system message leads)."""
    out = []
    for m in messages:
        if m["role"] == "system":
            out.append(f"{m['content']}\n\n")
        elif m["role"] == "user":
            out.append(f"### Instruction:\n{m['content']}\n\n### Response:\n")
        else:
            out.append(f"{m['content']}\n\n")
    return "".join(out)


class _Stopped(Exception):
    """Raised in the generation thread once the reader of its stream has gone."""


def _stoppable_streamer(tokenizer, stop: threading.Event):
    """transformers' TextIteratorStreamer whose put() (called once a token, by transformers' and PAC's generate)
    ends the generation when `stop` is set."""
    from transformers import TextIteratorStreamer

    class Streamer(TextIteratorStreamer):
        def put(self, value):
            if stop.is_set():
                raise _Stopped
            super().put(value)

    return Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class HFTalker:
    """A transformers causal LM (+ tokenizer) that streams its answers."""

    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.templated = bool(getattr(tokenizer, "chat_template", None))

    @property
    def context(self) -> int:
        """The positions left to prompt and answer: the model's own, less prompt tuning's virtual tokens (they sit in
        front of every prompt; unnoticed, a prompt that fit by the count ran past the model's positions)."""
        config = getattr(self.model, "config", None) or self.model.view.base.config  # a PAC model: its backbone's
        positions = getattr(config, "max_position_embeddings", None) or 2048
        peft = getattr(self.model, "peft_config", None)
        active = getattr(self.model, "active_adapter", None)
        virtual = getattr(peft.get(active), "num_virtual_tokens", 0) if isinstance(peft, dict) else 0
        return positions - (virtual or 0)

    def check(self, s: Sampling) -> None:
        """Refuse an answer longer than the context before any prompt: every prompt was blamed instead ("shorten
        it"), turn after turn of a chat."""
        if s.max_new_tokens >= self.context:
            raise ConfigError(f"--max-new-tokens {s.max_new_tokens}: the model's context holds {self.context} tokens, "
                              f"prompt and answer together; give fewer (at most {self.context - 1}).")

    def _fit(self, messages: list[dict], max_new_tokens: int) -> list[int]:
        """Prompt ids; the oldest turns are dropped while the prompt and answer would overflow the context."""
        limit = self.context
        msgs = list(messages)
        while True:
            if self.templated:
                ids = self.tokenizer(self._templated(msgs), add_special_tokens=False)["input_ids"]
            else:
                ids = self.tokenizer(alpaca_chat(msgs))["input_ids"]
            first = 1 if msgs and msgs[0]["role"] == "system" else 0
            if len(ids) + max_new_tokens <= limit or len(msgs) - first <= 1:
                break
            del msgs[first:first + 2]
        if len(ids) + max_new_tokens > limit:
            raise ConfigError(f"the prompt has {len(ids)} tokens; with --max-new-tokens {max_new_tokens} it exceeds "
                              f"the model's context of {limit}. Shorten it or lower --max-new-tokens.")
        return ids

    def _templated(self, msgs: list[dict]) -> str:
        """The conversation in the model's chat template; a template that refuses it (no system role, say) is a
        ConfigError, which a chat reports and survives (jinja's TemplateError was a traceback)."""
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        except TemplateError as err:
            raise template_refused(err, msgs) from None

    def stream_ids(self, ids: list[int], s: Sampling) -> Iterator[str]:
        """The answer's text as it is made. Left early (Ctrl-C in a chat, or the stream closed), the generation
        thread stops at its next token: it used to write the whole answer on in the background."""
        import torch

        stop = threading.Event()
        streamer = _stoppable_streamer(self.tokenizer, stop)
        kwargs = dict(input_ids=torch.tensor([ids], device=self.device),
                      attention_mask=torch.ones(1, len(ids), dtype=torch.long, device=self.device),
                      max_new_tokens=s.max_new_tokens, streamer=streamer, do_sample=s.temperature > 0,
                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        if s.temperature > 0:
            kwargs.update(temperature=s.temperature, top_p=s.top_p)
        else:  # greedy: silence the generation config's sampling defaults
            kwargs.update(temperature=None, top_p=None, top_k=None)
        failed: list[BaseException] = []

        def work():
            try:
                torch.manual_seed(s.seed)
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
                failed.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            stop.set()
            thread.join()
        if failed and not isinstance(failed[0], _Stopped):
            raise failed[0]

    def chat(self, messages: list[dict], s: Sampling) -> Iterator[str]:
        return self.stream_ids(self._fit(messages, s.max_new_tokens), s)

    def complete(self, prompt: str, s: Sampling) -> Iterator[str]:
        """The prompt continued as is. An empty prompt (no tokens: an empty id tensor crashed inside the embedding)
        and one that overflows the context with the answer (generated past the positions the model knows, without
        a word) are refused, as the chat's are."""
        ids = self.tokenizer(prompt)["input_ids"]
        if not ids:
            raise ConfigError("the prompt is empty (no tokens): give the text to continue with --prompt.")
        if len(ids) + s.max_new_tokens > self.context:
            raise ConfigError(f"the prompt has {len(ids)} tokens; with --max-new-tokens {s.max_new_tokens} it exceeds "
                              f"the model's context of {self.context}. Shorten it or lower --max-new-tokens.")
        return self.stream_ids(ids, s)


class TemplateRefused(ConfigError):
    """The model's chat template raised on the conversation; `system`: a system message was in it."""

    system = False


def template_refused(err: Exception, msgs: list[dict]) -> TemplateRefused:
    """The model's chat template raised on this conversation: say what to change."""
    system = any(m["role"] == "system" for m in msgs)
    fix = ("it may take no system message: drop --system" if system else
           "with `edgeft generate`, --raw feeds the prompt without the template")
    refused = TemplateRefused(f"the model's chat template refused the conversation ({err}); {fix}.")
    refused.system = system
    return refused


def _raised_in_template(err: BaseException) -> bool:
    """Whether a jinja template's code raised `err` (its frames are named "<template>")."""
    tb = err.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            return True
        tb = tb.tb_next
    return False


def _overflow(err: ValueError) -> bool:
    """llama.cpp's "Requested tokens (N) exceed context window of C" (raised before the first token streams)."""
    return "exceed context window" in str(err)


def _started(stream) -> Iterator | None:
    """llama.cpp's stream of chunks, its first one taken (only then does llama.cpp check the prompt's length);
    None when the prompt overflows the context."""
    chunks = iter(stream)
    try:
        head = next(chunks, None)
    except ValueError as err:
        if not _overflow(err):
            raise
        return None
    return itertools.chain([head] if head is not None else [], chunks)


DEFAULT_CONTEXT = 2048  # llama.cpp's context when --context is not given (or the model's own, when shorter)


def trained_context(path: Path) -> int | None:
    """The context the model in a GGUF file was trained for (`<arch>.context_length`); None when the file does not
    say or cannot be read (loading it then names the fault)."""
    try:
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields
        arch = fields["general.architecture"].contents()
        return int(fields[f"{arch}.context_length"].contents())
    except Exception:  # a missing, truncated or foreign file: llamacpp.load says which
        return None


def _as_deltas(chunks) -> Iterator[dict]:
    """llama.cpp's completion chunks in the shape of its chat chunks."""
    for chunk in chunks:
        yield {"choices": [{"delta": {"content": chunk["choices"][0]["text"]}}]}


class GGUFTalker:
    """An exported GGUF file run by llama.cpp; the chat template is the one written into the file, and a file
    without one gets edgeft's Alpaca layout, as HFTalker does (llama.cpp's fallback, Llama-2's [INST] layout, fed the
    export of a fine-tune prompts it was never trained on: another answer than the same model's in `--model`)."""

    trained: int | None = None  # the model's own context, where the file says
    templated = True  # the file holds a chat template

    def __init__(self, path: Path, n_ctx: int | None = None):
        from edgeft.compress.llamacpp import load

        if path.is_dir():  # "no such GGUF file" said nothing of what the folder is for
            raise ConfigError(f"--gguf {path} is a folder: give the .gguf file that `edgeft export --out FILE.gguf` "
                              "wrote, or pass a model folder with --model.")
        self.trained = trained_context(path)
        if n_ctx is None:
            n_ctx = min(DEFAULT_CONTEXT, self.trained or DEFAULT_CONTEXT)
        elif n_ctx < 1:
            raise ConfigError(f"--context {n_ctx}: llama.cpp's context must hold the prompt and the answer; give a "
                              "number of tokens (default: 2048, or the model's own when shorter).")
        elif self.trained and n_ctx > self.trained:
            raise ConfigError(f"--context {n_ctx}: {path} holds a model trained for {self.trained} tokens, and "
                              f"past them its answers degrade; give at most {self.trained}.")
        # llama.cpp pads the context to a multiple of 256, while llama-cpp-python sizes its token buffer by the
        # number asked for: a prompt longer than that but inside the padded context failed with numpy's "could not
        # broadcast input array". Asking for the padded size gives both the same length.
        self.llm = load(path, n_ctx=-(-n_ctx // 256) * 256, logits_all=False)
        if self.llm.n_ctx() != len(self.llm.input_ids):  # a llama.cpp that pads otherwise: ask for what it gives
            self.llm = load(path, n_ctx=self.llm.n_ctx(), logits_all=False)
        self.n_ctx = self.llm.n_ctx()
        self.templated = bool((getattr(self.llm, "metadata", None) or {}).get("tokenizer.chat_template"))

    def check(self, s: Sampling) -> None:
        """Nothing to refuse: llama.cpp ends an answer at the context's end, before --max-new-tokens if need be."""

    def _args(self, s: Sampling) -> dict:
        return dict(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed, stream=True)

    def _too_long(self, what: str, s: Sampling) -> ConfigError:
        room = (f"raise --context (this model holds up to {self.trained})" if self.trained and self.trained > self.n_ctx
                else "shorten it")
        return ConfigError(f"{what} does not fit llama.cpp's context of {self.n_ctx} tokens: {room} (llama.cpp "
                           "ends an answer at the context's end, before --max-new-tokens "
                           f"{s.max_new_tokens} if need be).")

    def _chat_stream(self, msgs: list[dict], s: Sampling):
        """llama.cpp's stream of chunks; its chat formatter raises ValueError from the template (`raise_exception`)
        while it renders the prompt, before any chunk, which was a traceback."""
        from jinja2 import TemplateError

        if not self.templated:
            return _as_deltas(self.llm.create_completion(alpaca_chat(msgs), **self._args(s)))
        try:
            return self.llm.create_chat_completion(messages=msgs, **self._args(s))
        except TemplateError as err:
            raise template_refused(err, msgs) from None
        except ValueError as err:
            if not _raised_in_template(err):
                raise
            raise template_refused(err, msgs) from None

    def chat(self, messages: list[dict], s: Sampling) -> Iterator[str]:
        """The answer to the conversation; its oldest turns are dropped while it overflows the context (as
        HFTalker does: llama.cpp's ValueError ended a long chat with a traceback)."""
        msgs = list(messages)
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        while (chunks := _started(self._chat_stream(msgs, s))) is None:
            if len(msgs) - first <= 1:
                raise self._too_long("the prompt", s)
            del msgs[first:first + 2]
        for chunk in chunks:
            text = chunk["choices"][0]["delta"].get("content")
            if text:
                yield text

    def complete(self, prompt: str, s: Sampling) -> Iterator[str]:
        if not prompt:  # llama.cpp asserted on an empty prompt (n_tokens > 0): a bare AssertionError
            raise ConfigError("the prompt is empty: give the text to continue with --prompt.")
        chunks = _started(self.llm.create_completion(prompt, **self._args(s)))
        if chunks is None:
            raise self._too_long("the prompt", s)
        for chunk in chunks:
            yield chunk["choices"][0]["text"]


def _hf_model(model: str, adapter: Optional[Path]):
    """(model, tokenizer) for a base model, base + adapter (LoRA merged, prompt tuning kept as PEFT), or a
    merged/compressed folder."""
    from edgeft.compress.merge import weights_method
    from edgeft.compress.source import open_model
    from edgeft.methods.base import check_backbone_matches, read_adapter_note
    from edgeft.models.backbone import load_backbone

    note = read_adapter_note(adapter) if adapter is not None else None
    if note is not None and note.get("head", "causal_lm") != "causal_lm":
        raise ModelError(f"{adapter}: this adapter was trained with a '{note['head']}' head (a classifier); it "
                         "cannot generate text. Evaluate it with `edgeft eval` instead.")
    if note is not None and note.get("method") == "pac":  # the side network writes beside the frozen backbone
        return _pac_model(model, adapter, note)
    if note is not None and weights_method(note) == "prompt":  # prompt tuning, or MeZO/FedKSeed over it
        from edgeft.methods.peft_methods import load_peft_adapter

        backbone = load_backbone(model, head="causal_lm")
        check_backbone_matches(note, backbone, adapter)
        return load_peft_adapter(backbone.model, adapter), backbone.tokenizer
    source = open_model(model, adapter)
    if source.backbone.head != "causal_lm":
        raise ModelError(f"'{model}' has a '{source.backbone.head}' head, not a language-model head: it cannot "
                         "generate text. Pick a causal LM such as smollm2-135m.")
    if source.side_module is not None:
        raise _side_module_refused(model, adapter, note, source.manifest.source)
    return source.backbone.model, source.backbone.tokenizer


def _side_module_refused(model: str, adapter: Optional[Path], note: Optional[dict], origin: dict) -> ModelError:
    """A side-network adapter that cannot run here. A compressed folder keeps it in side_module/ (it has no adapter
    note of its own: an AttributeError on None before): point at the base model and adapter it came from."""
    if note is not None:
        return ModelError(f"{adapter}: a {note.get('method')} adapter runs beside the backbone and is not merged into "
                          "it; edgeft generates with LoRA, prompt-tuning, PAC, full or bitfit results and GGUF "
                          "exports.")
    method = (origin.get("adapter_note") or {}).get("method", "side-network")
    return ModelError(f"{model}: this compressed folder keeps its {method} adapter beside the weights (side_module/), "
                      "and a side network runs only beside the backbone it was trained with. Generate with that "
                      f"backbone and the adapter: --model {origin.get('model', 'BASE')} --adapter "
                      f"{origin.get('adapter', 'ADAPTER')}.")


def _pac_model(model: str, adapter: Path, note: dict):
    """(PacModel, tokenizer): the frozen backbone with the trained side network, as `edgeft eval` loads it, for
    PacModel.generate."""
    from edgeft.compress.merge import task_for
    from edgeft.train.recipe import load_for_eval

    backbone, pac = load_for_eval(model, task_for(note, adapter), "causal_lm", adapter)
    return pac, backbone.tokenizer


def adapter_backbone(adapter: Path) -> str:
    """The backbone an adapter was trained on, for --adapter without --model: the absolute folder its identity
    records, else the name it was given as (an alias or a hub id ORG/NAME)."""
    import sys

    from edgeft.methods.base import read_adapter_note
    from edgeft.models.sources import SOURCES

    note = read_adapter_note(adapter)
    name = str(note.get("backbone") or "")
    folder = str(note.get("backbone_identity") or "").split(":", 1)[0]
    for candidate in (folder, name):
        # a hub id: kept as given in the identity too (a folder's identity has its absolute path)
        hub_id = candidate == name == folder and name.count("/") == 1 and not name.startswith((".", "/", "~"))
        if candidate in SOURCES or hub_id or (candidate and Path(candidate).is_dir()):
            print(f"edgeft: --model {candidate} (the backbone {adapter} was trained on)", file=sys.stderr)
            return candidate
    raise ConfigError(f"--adapter {adapter} was trained on backbone '{name}', which is neither an alias nor a folder "
                      "here: give --model with that model (its folder or alias).")


def open_talker(model: Optional[str] = None, adapter: Optional[Path] = None, gguf: Optional[Path] = None,
                device: str = "auto", n_ctx: int | None = None):
    """A talker for exactly one of --model (with an optional --adapter) or --gguf; `n_ctx`: llama.cpp's context."""
    if model is None and gguf is None and adapter is not None:
        model = adapter_backbone(Path(adapter))
    if (model is None) == (gguf is None):
        raise ConfigError("give exactly one of --model (an alias, model folder or compressed folder, optionally "
                          "with --adapter) or --gguf FILE.")
    if n_ctx is not None and gguf is None:
        raise ConfigError(f"--context {n_ctx} sets llama.cpp's context and goes with --gguf; a --model answers "
                          "within its own maximum positions (the oldest chat turns are dropped to fit).")
    if gguf is not None:
        if adapter is not None:
            raise ConfigError("--adapter goes with --model; a GGUF file already holds its merged weights.")
        return GGUFTalker(Path(gguf), n_ctx=n_ctx)
    from edgeft.train.loop import resolve_device

    where = str(resolve_device(device))  # before the model loads: a --device cuda without a GPU waited for it first
    net, tok = _hf_model(model, adapter)
    return HFTalker(net, tok, where)
