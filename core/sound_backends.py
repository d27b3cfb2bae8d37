"""The sound backends Sonify can run, one entry each (README: "Adding a sound backend").

A backend is one entry here plus one `Backend` subclass in `core/models/backends.py` that
names it (`entry = SOUND_BACKENDS[...]`), renders its batches and builds its tiny test model.
The configuration (`[models] sound_backend` choices, the `[generation]` defaults), the Hub
look-ups and loading all read these entries: nothing else lists the backends. This module
imports no model library, so reading the configuration stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class SoundBackend:
    """What Sonify needs to know about a family of diffusers text-to-audio pipelines."""

    name: str  # the `[models] sound_backend` value
    pipeline_class: str  # the diffusers pipeline class its model folders hold
    default_model: str  # the Hub id loaded when `[models] sound_model` is empty
    # `[generation]` values used when the file leaves those keys unset.
    generation_defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    gated: bool = False  # its released weights sit behind a licence click-through on the Hub
    # On a GPU with bf16, run in bf16 where fp16 would be chosen (fp16 overflows in it).
    bf16_over_fp16: bool = False


SOUND_BACKENDS: Mapping[str, SoundBackend] = MappingProxyType({b.name: b for b in (
    SoundBackend("audioldm", "AudioLDMPipeline", "cvssp/audioldm-s-full-v2"),
    SoundBackend("audioldm2", "AudioLDM2Pipeline", "cvssp/audioldm2"),
    # The released checkpoints are distilled for 8 steps with guidance baked in (the
    # [generation] defaults, 20 steps and guidance 2.5, are AudioLDM's); its T5Gemma text
    # encoder is a Gemma model, trained in bf16, whose activations can overflow in fp16.
    SoundBackend("stable-audio-3", "StableAudio3Pipeline", "stabilityai/stable-audio-3-small-sfx",
                 generation_defaults=MappingProxyType({"steps": 8, "guidance_scale": 1.0}),
                 gated=True, bf16_over_fp16=True),
)})
DEFAULT_SOUND_BACKEND = "audioldm"
