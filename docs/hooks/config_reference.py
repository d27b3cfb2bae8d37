"""MkDocs hook: the configuration reference, rendered from `config.example.toml` at build time.

The example file is the one place a key is described (a comment right above it); this hook
turns it into one table per section, with each key's default as the file writes it and what
the validation in `core.config` allows. `tests/test_docs.py` fails when a key of the
configuration has no description, so the reference cannot fall behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from core.config import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
MARKER = "<!-- config-reference -->"
KEY_LINE = re.compile(r"^(\w+)\s*=\s*(.+?)\s*$")
TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@dataclass
class Key:
    """One key as `config.example.toml` documents it."""

    name: str
    default: str  # as the file writes it (TOML)
    description: str


@dataclass
class Section:
    """One `[section]` of the example: the lines that introduce it, then its keys."""

    name: str
    intro: str = ""
    keys: list[Key] = field(default_factory=list)


def example_sections(text: str) -> list[Section]:
    """The sections of the example file, each key with the comment lines right above it.

    A comment block that follows a section's heading and is separated from the first key by
    a blank line introduces the section; the file's own opening comments are skipped."""
    sections: list[Section] = []
    comments: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            comments.append(stripped.lstrip("#").strip())
        elif not stripped:
            if sections and not sections[-1].keys and comments:
                sections[-1].intro = " ".join(comments)
            comments = []
        elif stripped.startswith("["):
            sections.append(Section(stripped.strip("[]")))
            comments = []
        elif (match := KEY_LINE.match(stripped)) and sections:
            sections[-1].keys.append(Key(match.group(1), match.group(2), " ".join(comments)))
            comments = []
    return sections


def allowed(section: str, key: str) -> str:
    """What the configuration accepts for a key: its choices, its range or its type."""
    cls = SECTIONS[section]
    (spec,) = [f for f in fields(cls) if f.name == key]
    meta: dict[str, Any] = dict(spec.metadata)
    hint = get_type_hints(cls)[key]
    if meta.get("choices"):
        return ", ".join(f"`{choice}`" for choice in meta["choices"])
    if get_origin(hint) is list:
        return f"a list of {TYPE_NAMES[get_args(hint)[0]].removeprefix('an ').removeprefix('a ')}s"
    if meta.get("lo") is not None and meta.get("hi") is not None:
        return f"{meta['lo']:g} to {meta['hi']:g}"
    return TYPE_NAMES[hint]


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(text: str) -> str:
    """Markdown: one heading (under the page's "Every key") and one table per section."""
    out: list[str] = []
    for section in example_sections(text):
        out += [f"### `[{section.name}]`", ""]
        if section.intro:
            out += [section.intro, ""]
        out += ["| key | default | allowed | what it does |", "|---|---|---|---|"]
        for key in section.keys:
            out.append(f"| `{key.name}` | `{cell(key.default)}` | "
                       f"{cell(allowed(section.name, key.name))} | {cell(key.description)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    """Fill the marker on the configuration page (every other page is left as it is)."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, render(EXAMPLE.read_text(encoding="utf-8")))
