"""Backbones: real pretrained transformers models seen as blocks."""

from edgeft.models.backbone import Backbone, arch_of, load_backbone, family_of
from edgeft.models.blocks import BlockView
from edgeft.models.sources import SOURCES

__all__ = ["Backbone", "BlockView", "SOURCES", "arch_of", "family_of", "load_backbone"]
