"""Activation checkpointing for the methods that backpropagate through the backbone (full, LoRA, prompt tuning,
BitFit): each block's activations are recomputed in the backward instead of kept, so a step's memory no longer
grows with blocks x tokens, for about one more forward of compute. Transformers does the recomputing
(`gradient_checkpointing_enable`); this finds the model to switch it on in and says which methods it helps."""

from __future__ import annotations

from edgeft.errors import ConfigError


def check_method(method_cls, compile_mode: str) -> None:
    """A ConfigError when checkpointing cannot help the method, before any work: zeroth-order and forward-gradient
    methods keep no activations for a backward, and PAC's backbone runs without gradients."""
    if not (method_cls.uses_optimizer and method_cls.trains_backbone):
        raise ConfigError(f"train.grad_checkpoint (--grad-checkpoint): {method_cls.name} keeps no backbone "
                          "activations for a backward, so there is nothing to recompute; it is for full, lora, "
                          "prompt and bitfit.")
    if compile_mode != "off":
        raise ConfigError("train.grad_checkpoint (--grad-checkpoint) with --compile: the compiled step is not "
                          "checked with recomputed blocks; use one of them.")


def _transformers_model(model):
    from transformers import PreTrainedModel

    return next((m for m in model.modules() if isinstance(m, PreTrainedModel)), None)


def apply(model, on: bool) -> None:
    """Checkpointing exactly as a run asks: a model shared by runs in one process (a federated client's cached
    setup) kept it switched on from an earlier run."""
    if on:
        enable(model)
        return
    hf = _transformers_model(model)
    if hf is not None and getattr(hf, "is_gradient_checkpointing", False):
        hf.gradient_checkpointing_disable()


def enable(model) -> None:
    """Recompute every block of the transformers model inside `model` (a PEFT wrapper's base model too). The
    non-reentrant form needs no input that requires grad, so frozen embeddings (LoRA, prompt tuning) work."""
    hf = _transformers_model(model)
    if hf is None or not hf.supports_gradient_checkpointing:
        raise ConfigError(f"train.grad_checkpoint (--grad-checkpoint): {type(hf or model).__name__} does not support "
                          "gradient checkpointing in transformers; run without it.")
    hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
