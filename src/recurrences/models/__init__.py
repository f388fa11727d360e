"""Models: configs (dataclasses that round-trip through JSON/TOML), blocks and the sequence model."""

from __future__ import annotations

from .blocks import GatedMLP, ResidualBlock, RMSNorm
from .config import ConfigMixin, ModelConfig
from .sequence import SequenceModel

__all__ = ["ConfigMixin", "GatedMLP", "ModelConfig", "ResidualBlock", "RMSNorm", "SequenceModel"]
