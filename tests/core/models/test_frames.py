"""Three frames → the caption shown (the medoid) and one sound prompt."""

from __future__ import annotations

from typing import Any

from core.models.frames import clip_caption_parts, content_words, medoid, overlap
from core.models.pipeline import Pipeline

BEACH = ["a dog running on a beach", "a dog on a sandy beach near the sea",
         "a dog jumping into the sea waves"]


def test_the_caption_shown_is_the_one_closest_to_the_others() -> None:
    assert content_words("A dog on the beach, a DOG!") == ["dog", "beach"]
    assert overlap("a dog on a beach", "the beach with a dog") == 1.0
    assert medoid(BEACH) == 1  # shares "dog", "beach" and "sea" with the others
    # Ties go to the middle frame; nothing in common either way.
    assert medoid(["a red car", "a blue boat", "a green tree"]) == 1
    shown, extra = clip_caption_parts(BEACH)
    assert shown == BEACH[1]
    # Each later caption adds only its new words, in time order.
    assert extra == ["running", "jumping waves"]


def test_frames_that_say_the_same_add_nothing() -> None:
    same = ["a cat sleeping on a sofa", "a cat sleeping on the sofa", "a cat on a sofa"]
    shown, extra = clip_caption_parts(same)
    assert shown in same and extra == []


class Words:
    """A sound model whose text encoder reads `limit` words."""

    sample_rate = 16_000

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def prompt_fits(self, prompt: str) -> bool:
        return len(prompt.split()) <= self.limit

    def fit_prompt(self, prompt: str) -> str:
        return " ".join(prompt.split()[:self.limit])


def pipeline(limit: int) -> Pipeline:
    generator: Any = Words(limit)
    return Pipeline(None, generator, prompt_template="the sound of {caption}")


def test_the_prompt_keeps_the_medoid_and_drops_the_last_frames_words_first() -> None:
    shown, extra = clip_caption_parts(BEACH)
    assert pipeline(100).clip_prompt_for(shown, extra) == (
        "the sound of a dog on a sandy beach near the sea, then running, then jumping waves")
    # Too long: "waves" goes first, then "jumping", then "running".
    assert pipeline(16).clip_prompt_for(shown, extra) == (
        "the sound of a dog on a sandy beach near the sea, then running, then jumping")
    assert pipeline(13).clip_prompt_for(shown, extra) == (
        "the sound of a dog on a sandy beach near the sea")
    # Even the medoid is too long: cut word by word as a picture's caption is.
    assert pipeline(6).clip_prompt_for(shown, extra) == "the sound of a dog on"
