"""Prompt building: a caption put into the template as a phrase; the longest fitting prefix."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from core.models.prompt import EMPTY_CAPTION, longest_fitting, prompt_from_caption

TEMPLATE = "The sound of {caption}, as heard in real life"


@pytest.mark.parametrize("caption,expected", [
    ("A dog barking.", "The sound of a dog barking, as heard in real life"),
    ("  a   cat\nmeowing ", "The sound of a cat meowing, as heard in real life"),
    ("NASA rocket launch.", "The sound of NASA rocket launch, as heard in real life"),
    ("TV playing in a room.", "The sound of TV playing in a room, as heard in real life"),
    ("iPhone ringing on a table.", "The sound of iPhone ringing on a table, as heard in real life"),
    ("Golden Gate Bridge at dusk.",
     "The sound of Golden Gate Bridge at dusk, as heard in real life"),
    ("The {weird} caption...", "The sound of the {weird} caption, as heard in real life"),
    ("", f"The sound of {EMPTY_CAPTION}, as heard in real life"),
    # The picture's medium is seen, not heard: only the scene goes into the prompt.
    ("A black and white photo of a train.", "The sound of a train, as heard in real life"),
    ("A close up of a cat on a sofa.", "The sound of a cat on a sofa, as heard in real life"),
    ("An aerial view of a busy harbour.", "The sound of a busy harbour, as heard in real life"),
    ("A picture of NASA rocket launch.",
     "The sound of NASA rocket launch, as heard in real life"),
    ("A shot of whiskey on a bar.",
     "The sound of a shot of whiskey on a bar, as heard in real life"),
    ("A photo of.", "The sound of a photo of, as heard in real life"),
    ("A man's bicycle, parked,", "The sound of a man's bicycle, parked, as heard in real life"),
])
def test_prompt_from_caption(caption: str, expected: str) -> None:
    assert prompt_from_caption(caption, TEMPLATE) == expected


def test_template_needs_placeholder() -> None:
    with pytest.raises(ConfigError, match="prompt_template"):
        prompt_from_caption("A dog.", "The sound of it")


@pytest.mark.parametrize("count,limit", [(0, 0), (5, 0), (5, 3), (5, 5), (8, 7), (1, 1)])
def test_longest_fitting_finds_the_largest_fitting_count(count: int, limit: int) -> None:
    asked: list[int] = []

    def fits(n: int) -> bool:
        asked.append(n)
        return n <= limit

    assert longest_fitting(count, fits) == limit
    assert len(asked) <= count.bit_length()  # bisection, not a scan
