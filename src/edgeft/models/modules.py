"""Replace a submodule by its dotted name: methods, compression and export all swap layers this way."""

from __future__ import annotations

from torch import nn


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
