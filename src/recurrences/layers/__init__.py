"""Token mixers (B, T, D) -> (B, T, D), all created by name through the registry."""

from __future__ import annotations

from .base import (
    Mixer,
    MixerSpec,
    available_hybrids,
    available_mixers,
    create_mixer,
    expand_hybrid,
    mixer_spec,
    register_hybrid,
    register_mixer,
)

__all__ = [
    "Mixer",
    "MixerSpec",
    "available_hybrids",
    "available_mixers",
    "create_mixer",
    "expand_hybrid",
    "mixer_spec",
    "register_hybrid",
    "register_mixer",
]
