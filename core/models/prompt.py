"""From a caption (what is seen) to a sound prompt (what is heard)."""

from __future__ import annotations

import re
from collections.abc import Callable

from core.errors import ConfigError

PLACEHOLDER = "{caption}"
# What an empty caption (a random test model can decode nothing) becomes in the prompt.
EMPTY_CAPTION = "a quiet scene"
_MIXED_CASE = re.compile(r"[A-Za-z]*[a-z][A-Za-z]*[A-Z]")  # iPhone, McDonald, eBay
# "A black and white photo of a train": the picture's medium is seen, not heard, and
# "the sound of a photo" sends AudioLDM the wrong way. Only the scene goes into the prompt.
_MEDIUM = re.compile(
    r"^(?:an?\s+|the\s+)?(?:(?:black[- ]and[- ]white|close[- ]up|blurry|blurred|old|vintage|"
    r"colou?r|aerial|grainy|dark|bright|low[- ]angle|wide[- ]angle)\s+)*"
    r"(?:photo(?:graph)?|picture|image|snapshot|painting|drawing|illustration|sketch|"
    r"close[- ]up|view)\s+(?:of|showing)\s+(?=\S)", re.IGNORECASE)


def _keeps_capital(words: list[str]) -> bool:
    """True when the first word looks like a proper noun or an acronym, not a sentence start."""
    first = words[0].strip("\"'()[]")
    core = re.sub(r"[^A-Za-z]", "", first)
    if not core or not core[0].isupper():
        return False
    if len(core) > 1 and core.isupper():  # NASA, TV, DJ's
        return True
    if first == "I" or first.startswith(("I'", "I’")) or _MIXED_CASE.match(core):
        return True
    # "Golden Gate Bridge at dusk": a capitalised second word suggests a multi-word name.
    second = re.sub(r"[^A-Za-z]", "", words[1]) if len(words) > 1 else ""
    return bool(second) and second[0].isupper()


def longest_fitting(count: int, fits: Callable[[int], bool]) -> int:
    """The largest n in 0..count with fits(n), by bisection (fits grows false with n)."""
    lo, hi = 0, count
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def prompt_from_caption(caption: str, template: str) -> str:
    """Put a caption into `template` ("{caption}" placeholder) as a mid-sentence phrase."""
    if PLACEHOLDER not in template:
        raise ConfigError(f"[generation] prompt_template must contain {PLACEHOLDER}: {template!r}")
    text = _MEDIUM.sub("", " ".join(caption.split())).rstrip(" .,;:").strip()
    if not text:
        text = EMPTY_CAPTION
    words = text.split(" ")
    if not _keeps_capital(words):
        text = text[0].lower() + text[1:]
    # str.replace, not str.format: a caption with braces must not break the template.
    return " ".join(template.replace(PLACEHOLDER, text).split())
