"""Backbones: real pretrained transformers models seen as blocks."""

from edgeft.models.backbone import Arch, Backbone, load_backbone, family_of
from edgeft.models.blocks import BlockView
from edgeft.models.sources import SOURCES

__all__ = ["Arch", "Backbone", "BlockView", "SOURCES", "family_of", "load_backbone"]
