"""Run an exported GGUF file in llama.cpp (through llama-cpp-python) and score it like the PyTorch model.

Perplexity is computed on the *same token ids* as the PyTorch figure (each window evaluated from an
empty context), so the two numbers differ only by what the export and llama.cpp's kernels change.
llama.cpp's own tokenizer is checked separately against transformers' on the same text.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgeft.errors import ConfigError, ModelError

INSTALL_HINT = ("llama-cpp-python is not installed. It builds llama.cpp from source (about 10 minutes on 2 cores): "
                "CMAKE_ARGS='-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' "
                "pip install llama-cpp-python==0.3.36 (see docs/compress.md).")


@contextmanager
def _quiet_stderr():
    """llama.cpp logs every tensor to stderr (fd 2); keep the terminal for edgeft's own output."""
    fd = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)


def require() -> None:
    """A ConfigError naming the install when llama-cpp-python is missing: asked before work whose end needs it
    (`export --check` wrote the GGUF, then stopped, and the same command again was refused: the file existed)."""
    import importlib

    try:
        importlib.import_module("llama_cpp")
    except ImportError as err:
        raise ConfigError(INSTALL_HINT) from err


def load(path: str | Path, n_ctx: int = 512, n_threads: int | None = None, logits_all: bool = True, quiet=True):
    """A llama_cpp.Llama for the file; clear errors for a missing package or a file llama.cpp rejects."""
    try:
        from llama_cpp import Llama
    except ImportError as err:
        raise ConfigError(INSTALL_HINT) from err
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such GGUF file.")
    try:
        if quiet:
            with _quiet_stderr():
                return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads or os.cpu_count(),
                             logits_all=logits_all, verbose=False)
        return Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_threads=n_threads or os.cpu_count(),
                     logits_all=logits_all, verbose=True)
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"{path}: llama.cpp could not load this file ({err}). It is corrupt, truncated or not a "
                         "model GGUF; re-export it.") from err


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def perplexity(llm, windows: list[list[int]], progress=None) -> dict:
    """exp(mean NLL) of every window's tokens 2..n given the ones before, from an empty context each time."""
    t0 = time.perf_counter()
    nll, n = 0.0, 0
    for w in windows:
        if len(w) > llm.n_ctx():
            raise ConfigError(f"window of {len(w)} tokens is longer than the llama.cpp context ({llm.n_ctx()}).")
        llm.reset()
        llm.eval(w)
        logits = np.asarray(llm.scores[: len(w) - 1])
        logp = _log_softmax(logits)
        nll -= float(logp[np.arange(len(w) - 1), w[1:]].sum())
        n += len(w) - 1
        if progress:
            progress()
    return {"perplexity": math.exp(nll / n), "eval_tokens": n, "seconds": time.perf_counter() - t0}


def greedy(llm, prompt_ids: list[int], max_new_tokens: int = 16) -> list[int]:
    """Greedy continuation token ids (argmax each step), comparable with transformers' do_sample=False."""
    llm.reset()
    out = []
    for tok in llm.generate(prompt_ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(int(tok))
        if len(out) >= max_new_tokens or tok == llm.token_eos():
            break
    return out


def tokenizer_agreement(llm, hf_tokenizer, text: str) -> dict:
    """How many of transformers' tokens llama.cpp's tokenizer reproduces on `text`."""
    ours = hf_tokenizer.encode(text, add_special_tokens=False)
    theirs = llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    same = sum(1 for a, b in zip(ours, theirs) if a == b)
    return {"hf_tokens": len(ours), "llama_cpp_tokens": len(theirs), "identical": ours == theirs,
            "matching_prefix_fraction": same / max(len(ours), 1)}
