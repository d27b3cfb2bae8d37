"""Per-request generation options, bounded by the configuration, and how users spell them.

Every platform reads a clip length and a seed from its users (a Telegram word such as
``8s``, a Discord command option, a web form field, a JSON number). `parse_seconds` and
`parse_seed` accept all those spellings and refuse anything else with a `BadRequest`
whose code selects the catalogue text, so no input — a 400-digit number, ``nan``, a
boolean — can surface as anything but that refusal.
"""

from __future__ import annotations

import math
import re
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from core.config import MAX_CANDIDATES, MAX_SEED, MAX_STEPS, MIN_SECONDS, GenerationConfig
from core.errors import BadRequest

# A length as users type it: "8", "8.5", "8,5", "8s", "8 sec", "8 segundos".
_SECONDS_TEXT = re.compile(r"(\d{1,6}(?:[.,]\d{1,6})?)\s*(?:s|secs?|seconds?|seg|segundos?)?",
                           re.IGNORECASE)
_SEED_TEXT = re.compile(r"[+]?\d{1,12}")


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
    # Takes rendered per prompt; the one CLAP scores highest is kept. 0 = auto (per device).
    candidates: int = 0

    @classmethod
    def from_config(cls, generation: GenerationConfig, *, seconds: float | None = None,
                    steps: int | None = None) -> GenerationOptions:
        """Defaults from `[generation]`, with a user's `seconds`/`steps` checked against bounds."""
        options = cls(seconds=float(generation.seconds if seconds is None else seconds),
                      steps=int(generation.steps if steps is None else steps),
                      guidance_scale=generation.guidance_scale,
                      negative_prompt=generation.negative_prompt,
                      scheduler=generation.scheduler,
                      candidates=generation.candidates)
        options.check(generation)
        return options

    def check(self, generation: GenerationConfig) -> None:
        """Refuse options outside the configured bounds (BadRequest)."""
        if not MIN_SECONDS <= self.seconds <= generation.max_seconds:
            raise BadRequest(f"seconds must be between {MIN_SECONDS:g} and "
                             f"{generation.max_seconds:g}", code="bad_seconds",
                             min_seconds=MIN_SECONDS, max_seconds=generation.max_seconds)
        if not 1 <= self.steps <= MAX_STEPS:
            raise BadRequest(f"steps must be between 1 and {MAX_STEPS}", code="bad_option")
        if not 0 <= self.candidates <= MAX_CANDIDATES:
            raise BadRequest(f"candidates must be between 0 (auto) and {MAX_CANDIDATES}",
                             code="bad_option")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationOptions:
        """Options as `to_dict` wrote them, including rows written before `candidates` existed."""
        data = dict(data)
        if "waveforms_per_prompt" in data:  # the old name, still in stored request rows
            old = data.pop("waveforms_per_prompt")
            data.setdefault("candidates", old)
        return cls(**data)


def check_seed(seed: int | None) -> int:
    """Return `seed`, or a fresh random one; refuse seeds outside 0..MAX_SEED."""
    if seed is None:
        return secrets.randbelow(MAX_SEED + 1)
    if not 0 <= seed <= MAX_SEED:
        raise BadRequest(f"seed must be between 0 and {MAX_SEED}", code="bad_seed",
                         max_seed=MAX_SEED)
    return seed


def parse_seconds(value: object, generation: GenerationConfig) -> float | None:
    """A clip length from a number or a user's text (``8``, ``8.5s``, ``8,5 seg``).

    None or an empty text means "the default" (None). Anything else that is not a finite
    length within the configured bounds raises BadRequest(bad_seconds).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # a huge JSON integer
            seconds = math.inf
    elif isinstance(value, str) and (match := _SECONDS_TEXT.fullmatch(value.strip())):
        seconds = float(match.group(1).replace(",", "."))
    if not (math.isfinite(seconds) and MIN_SECONDS <= seconds <= generation.max_seconds):
        raise BadRequest("seconds out of range", code="bad_seconds", min_seconds=MIN_SECONDS,
                         max_seconds=generation.max_seconds)
    return seconds


def parse_seed(value: object) -> int | None:
    """A seed from a whole number or its text; None or an empty text means "draw one"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    seed = -1
    if isinstance(value, int) and not isinstance(value, bool):
        seed = value
    elif isinstance(value, float) and value.is_integer():
        seed = int(value)
    elif isinstance(value, str) and _SEED_TEXT.fullmatch(value.strip()):
        seed = int(value.strip())
    return check_seed(seed)
