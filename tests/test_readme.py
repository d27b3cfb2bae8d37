"""The README cannot drift: its tables of defaults and limits are read back and compared with
the configuration, and its list of promises names tests that exist."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from core.config import ENV_PRESET, ENV_SECRETS, SECTIONS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Units the limit tables use, in the configuration's own units (bytes, seconds, pixels).
UNITS = {"": 1, "MB": 1_000_000, "million": 1_000_000, "s": 1, "px": 1}


def section(heading: str) -> str:
    """The README's text under `heading` (a whole heading line), up to the next heading of
    the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = README.index(f"\n{heading}\n") + len(heading) + 2
    ends = [m.start() for m in re.finditer(rf"^#{{1,{level}}} ", README[start:], re.M)]
    return README[start:start + ends[0]] if ends else README[start:]


def tables(text: str, header: str) -> list[tuple[str, list[list[str]]]]:
    """Each table in `text` whose header row starts with `header`: (the text before it, since
    the previous table or heading; its rows as lists of cells)."""
    found = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header):
            before = "\n".join(lines[max(0, i - 3):i + 1])
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in row.strip().strip("|").split(" | ")])
            found.append((before, rows))
    return found


def literal(token: str) -> Any:
    """A value as the README writes it in backticks: TOML where it parses, else the text."""
    try:
        return tomllib.loads(f"v = {token}")["v"]
    except tomllib.TOMLDecodeError:
        return token


def amount(text: str) -> float:
    match = re.fullmatch(r"([\d.,]+)\s*(MB|million|s|px)?", text.strip())
    assert match, f"cannot read a limit from {text!r}"
    return float(match.group(1).replace(",", "")) * UNITS[match.group(2) or ""]


def defaults(name: str) -> dict[str, Any]:
    section_type = SECTIONS[name]
    instance = section_type()
    return {f.name: getattr(instance, f.name) for f in fields(section_type)}


@pytest.mark.parametrize(("name", "heading"), [("telegram", "### `[telegram]` settings"),
                                               ("discord", "## Discord")])
def test_settings_tables_list_every_key_with_its_default(name: str, heading: str) -> None:
    ((_, rows),) = tables(section(heading), "| key | default |")
    listed: dict[str, Any] = {}
    for key_cell, default_cell, *_ in rows:
        keys = re.findall(r"`([^`]+)`", key_cell)
        values = [literal(v) for v in re.findall(r"`([^`]*)`", default_cell)]
        assert len(keys) == len(values), (key_cell, default_cell)
        listed.update(zip(keys, values, strict=True))
    assert listed == defaults(name)


def test_limit_tables_show_the_configured_defaults() -> None:
    checked = 0
    for before, rows in tables(README, "| limit | default | key"):
        (section_name,) = re.findall(r"`\[(\w+)\]`", before)[-1:]  # the table's own section
        for _, default_cell, key_cell in rows:
            keys = re.findall(r"`(?:\[(\w+)\] )?(\w+)`", key_cell)
            if not keys:
                continue  # a measured limit, not a setting
            values = [amount(v) for v in default_cell.split(" / ")]
            assert len(keys) == len(values), (key_cell, default_cell)
            owner = section_name  # "`[jobs] a` / `b`": b is in [jobs] too
            for (own_section, key), value in zip(keys, values, strict=True):
                owner = own_section or owner
                assert defaults(owner)[key] == value, (key, default_cell)
                checked += 1
    assert checked >= 6  # the image limits at least: the tables were found and read


def test_the_web_example_is_the_default_configuration() -> None:
    block = re.search(r"```toml\n(\[web\]\n.*?)```", section("## The web page"), re.S)
    assert block is not None
    shown = tomllib.loads(block.group(1))["web"]
    web = defaults("web")
    assert shown == {key: web[key] for key in shown}


def test_the_environment_table_is_every_variable_the_configuration_reads() -> None:
    ((_, rows),) = tables(section("## Configuration"), "| variable | replaces |")
    listed = {re.findall(r"`(\w+)", variable)[0]: replaces for variable, replaces in rows}
    assert set(listed) == {*ENV_SECRETS.values(), ENV_PRESET}
    for (name, key), variable in ENV_SECRETS.items():
        assert listed[variable] == f"`[{name}] {key}`"


def test_every_promise_names_tests_that_exist() -> None:
    ((_, rows),) = tables(section("## What the tests keep"), "| promise | kept by |")
    assert len(rows) >= 10
    for promise, kept_by in rows:
        references = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", kept_by)
        assert references, promise
        for path, test in references:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert not test or re.search(rf"^(?:async )?def {test}\(", source, re.M), \
                f"{path}::{test} (for: {promise})"
