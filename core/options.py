"""Per-request generation options, bounded by the configuration."""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from typing import Any

from core.config import GenerationConfig
from core.errors import BadRequest

MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class GenerationOptions:
    """Everything that shapes a clip except the seed.

    Jobs whose options are equal can share one batched pipeline call; the seed is
    per job (each prompt gets its own seeded generator), so it is not part of this.
    """

    seconds: float = 5.0
    steps: int = 20
    guidance_scale: float = 2.5
    negative_prompt: str = ""
    scheduler: str = "dpm"
    waveforms_per_prompt: int = 1

    @classmethod
    def from_config(cls, gen: GenerationConfig, *, seconds: float | None = None,
                    steps: int | None = None) -> GenerationOptions:
        """Defaults from `[generation]`, with a user's `seconds`/`steps` checked against bounds."""
        if seconds is None:
            seconds = gen.seconds
        if not (0.5 <= seconds <= gen.max_seconds):
            raise BadRequest(f"seconds must be between 0.5 and {gen.max_seconds:g}",
                             code="bad_seconds", max_seconds=gen.max_seconds)
        if steps is None:
            steps = gen.steps
        if not (1 <= steps <= 500):
            raise BadRequest("steps must be between 1 and 500", code="bad_option")
        return cls(seconds=float(seconds), steps=int(steps), guidance_scale=gen.guidance_scale,
                   negative_prompt=gen.negative_prompt, scheduler=gen.scheduler,
                   waveforms_per_prompt=gen.waveforms_per_prompt)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationOptions:
        return cls(**data)


def check_seed(seed: int | None) -> int:
    """Return `seed`, or a fresh random one; refuse seeds outside 0..2**31-1."""
    if seed is None:
        return secrets.randbelow(MAX_SEED + 1)
    if not (0 <= seed <= MAX_SEED):
        raise BadRequest(f"seed must be between 0 and {MAX_SEED}", code="bad_seed",
                         max_seed=MAX_SEED)
    return seed
