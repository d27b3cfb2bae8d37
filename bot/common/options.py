"""The options a user may give with a request (length, seed), however the platform spells them.

Bounds come from the configuration (`[generation] max_seconds`) and the shared limits in
`core.config`; a refused value raises `BadRequest` with the code the catalogue explains.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.config import GenerationConfig
from core.errors import BadRequest
from core.options import GenerationOptions, parse_seconds, parse_seed
from core.records import RequestRecord

# `8s`, `8.5 sec`, `8,5seg`: a length written as one word.
_LENGTH_WORD = re.compile(r"^(\d+(?:[.,]\d+)?)\s*(?:s|sec|secs|seconds?|seg|segundos?)$", re.I)
_SECONDS_KEYS = {"s", "sec", "secs", "second", "seconds", "len", "length", "duration", "dur",
                 "seg", "segundos", "duracion", "duración"}
_SEED_KEYS = {"seed", "semilla"}


@dataclass(frozen=True)
class RequestedOptions:
    """The options of one request: clip options and an optional fixed seed."""

    options: GenerationOptions
    seed: int | None = None


def requested_options(generation: GenerationConfig, *, seconds: object = None,
                      seed: object = None,
                      default_seconds: float | None = None) -> RequestedOptions:
    """Options from a form, a JSON body or command arguments (numbers or their text);
    `default_seconds` (a chat's setting) where no length is asked for."""
    length = parse_seconds(seconds, generation)
    if length is None:
        length = default_seconds
    return RequestedOptions(GenerationOptions.from_config(generation, seconds=length),
                            parse_seed(seed))


def options_from_words(words: Sequence[str], generation: GenerationConfig, *,
                       strict: bool = True,
                       default_seconds: float | None = None) -> RequestedOptions:
    """Options like `8s`, `seconds=8`, `seed=42` among a message's words; others pass.

    Unknown `key=value` words are refused when `strict` (a command), ignored otherwise
    (free text such as a photo's caption).
    """
    seconds: str | None = None
    seed: str | None = None
    for word in words:
        if word.lower().startswith(("http://", "https://")):
            continue
        if _LENGTH_WORD.match(word):
            seconds = word
            continue
        if "=" not in word:
            continue
        key, _, value = word.partition("=")
        key = key.strip().lower()
        if key in _SEED_KEYS:
            seed = value
        elif key in _SECONDS_KEYS:
            seconds = value or "?"  # "seconds=" alone is a mistake, not the default
        elif strict:
            raise BadRequest(f"unknown option {key!r}", code="bad_option")
    return requested_options(generation, seconds=seconds, seed=seed,
                             default_seconds=default_seconds)


def options_of(record: RequestRecord, generation: GenerationConfig) -> GenerationOptions:
    """What a new take of `record` renders with: its own options (the configured ones for a
    row that kept none); never its seed."""
    return record.generation_options or GenerationOptions.from_config(generation)


def retakes_words(record: RequestRecord) -> bool:
    """Whether another take of `record` renders its words again (a "Use my words" result)
    rather than its caption through the prompt template."""
    return record.reply_context.get("mode") == "prompt" or not record.caption
