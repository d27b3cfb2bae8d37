"""A few frames of one clip → one caption to show and one sound prompt.

The caption shown is the *medoid*: the frame caption with the highest mean word overlap
(Jaccard over lower-cased content words) with the others, ties going to the frame nearest
the middle — a real caption, one sentence. The prompt starts from it; each other caption
that adds something (overlap with the medoid below `NEW_ENOUGH`) adds its new words as
", then …", in time order. When the prompt is too long for the text encoder, later frames'
words go first; the medoid always stays.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

NEW_ENOUGH = 0.5
_WORD = re.compile(r"[a-z0-9']+")
_STOP = frozenset(
    "a an the of in on at to and or with by for from is are was were be being its it this that "
    "there some two three one his her their over under near into onto up down while as".split())


def content_words(caption: str) -> list[str]:
    """Lower-cased words that carry meaning, in order, each once."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(caption.lower()):
        if word not in _STOP:
            seen.setdefault(word, None)
    return list(seen)


def overlap(a: str, b: str) -> float:
    """Jaccard similarity of two captions' content words (1.0 for two empty ones)."""
    x, y = set(content_words(a)), set(content_words(b))
    if not x and not y:
        return 1.0
    return len(x & y) / len(x | y)


def medoid(captions: Sequence[str]) -> int:
    """Index of the caption closest to all the others (ties: nearest the middle frame)."""
    if not captions:
        raise ValueError("no captions")
    n = len(captions)
    middle = (n - 1) / 2

    def score(i: int) -> tuple[float, float]:
        others = [overlap(captions[i], captions[j]) for j in range(n) if j != i]
        mean = sum(others) / len(others) if others else 1.0
        return (mean, -abs(i - middle))

    return max(range(n), key=score)


def clip_caption_parts(captions: Sequence[str]) -> tuple[str, list[str]]:
    """The caption shown (the medoid) and, in time order, the new words of each frame that
    adds something to it."""
    centre = medoid(captions)
    shown = " ".join(captions[centre].split())
    known = set(content_words(shown))
    extra: list[str] = []
    for i, caption in enumerate(captions):
        if i == centre or overlap(caption, shown) >= NEW_ENOUGH:
            continue
        new = [w for w in content_words(caption) if w not in known]
        if new:
            extra.append(" ".join(new))
            known.update(new)
    return shown, extra


def joined(shown: str, extra: Sequence[str]) -> str:
    """The text the prompt template wraps: the medoid, then each frame's new words."""
    text = shown.rstrip(" .,;:")
    return "".join([text, *(f", then {words}" for words in extra)])
