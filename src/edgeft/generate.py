"""Talk to a model you tuned: a base model, base + adapter, a merged/compressed folder, or a GGUF export.

Tokens stream as they are made (transformers' TextIteratorStreamer in a generation thread; llama.cpp's
streamed completions for GGUF), so `edgeft generate` and `edgeft chat` print while the model works.
Prompts use the model's chat template; a model without one gets the Alpaca layout edgeft fine-tunes
with (data/features.py), so an adapter sees the prompt format it was trained on.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

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
        if self.temperature < 0:
            raise ConfigError(f"--temperature {self.temperature}: must be 0 (greedy) or more.")
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


class HFTalker:
    """A transformers causal LM (+ tokenizer) that streams its answers."""

    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.templated = bool(getattr(tokenizer, "chat_template", None))

    @property
    def context(self) -> int:
        config = getattr(self.model, "config", None) or self.model.view.base.config  # a PAC model: its backbone's
        return getattr(config, "max_position_embeddings", None) or 2048

    def _fit(self, messages: list[dict], max_new_tokens: int) -> list[int]:
        """Prompt ids; the oldest turns are dropped while the prompt and answer would overflow the context."""
        limit = self.context
        msgs = list(messages)
        while True:
            if self.templated:
                text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
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

    def stream_ids(self, ids: list[int], s: Sampling) -> Iterator[str]:
        import torch
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
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
        yield from streamer
        thread.join()
        if failed:
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


class GGUFTalker:
    """An exported GGUF file run by llama.cpp; the chat template is the one written into the file."""

    trained: int | None = None  # the model's own context, where the file says

    def __init__(self, path: Path, n_ctx: int | None = None):
        from edgeft.compress.llamacpp import load

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

    def _args(self, s: Sampling) -> dict:
        return dict(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed, stream=True)

    def _too_long(self, what: str, s: Sampling) -> ConfigError:
        room = (f"raise --context (this model holds up to {self.trained})" if self.trained and self.trained > self.n_ctx
                else "shorten it")
        return ConfigError(f"{what} does not fit llama.cpp's context of {self.n_ctx} tokens: {room} (llama.cpp "
                           "ends an answer at the context's end, before --max-new-tokens "
                           f"{s.max_new_tokens} if need be).")

    def chat(self, messages: list[dict], s: Sampling) -> Iterator[str]:
        """The answer to the conversation; its oldest turns are dropped while it overflows the context (as
        HFTalker does: llama.cpp's ValueError ended a long chat with a traceback)."""
        msgs = list(messages)
        first = 1 if msgs and msgs[0]["role"] == "system" else 0
        while (chunks := _started(self.llm.create_chat_completion(messages=msgs, **self._args(s)))) is None:
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
        raise ModelError(f"{adapter}: a {note.get('method')} adapter runs beside the backbone and is not merged into "
                         "it; edgeft generates with LoRA, prompt-tuning, PAC, full or bitfit results and GGUF exports.")
    return source.backbone.model, source.backbone.tokenizer


def _pac_model(model: str, adapter: Path, note: dict):
    """(PacModel, tokenizer): the frozen backbone with the trained side network, as `edgeft eval` loads it, for
    PacModel.generate."""
    from edgeft.compress.merge import task_for
    from edgeft.train.recipe import load_for_eval

    backbone, pac = load_for_eval(model, task_for(note, adapter), "causal_lm", adapter)
    return pac, backbone.tokenizer


def open_talker(model: Optional[str] = None, adapter: Optional[Path] = None, gguf: Optional[Path] = None,
                device: str = "auto", n_ctx: int | None = None):
    """A talker for exactly one of --model (with an optional --adapter) or --gguf; `n_ctx`: llama.cpp's context."""
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

    net, tok = _hf_model(model, adapter)
    return HFTalker(net, tok, str(resolve_device(device)))
