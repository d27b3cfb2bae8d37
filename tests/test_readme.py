"""The README keeps its promises: it stays short, its commands run, its links lead to pages of
the documentation site that exist, and the settings, variables and figures it names are the
real ones. (The site's own tables are checked in tests/test_docs.py.)"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml
from markdown.extensions.toc import slugify

from bot.cli import COMMANDS, build_parser
from core.config import ENV_PRESET, ENV_SECRETS, SECTIONS, Config, parse_config
from core.sound_backends import SOUND_BACKENDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
MAX_LINES = 250


def section(heading: str) -> str:
    start = README.index(f"\n{heading}\n") + len(heading) + 2
    end = README.find("\n## ", start)
    return README[start:end if end >= 0 else None]


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^ *```{language}\n(.*?)^ *```", README, re.S | re.M)


def anchors(page: Path) -> set[str]:
    """The ids MkDocs gives the headings of a page (the toc extension's default slugs)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slugify(heading.replace("`", ""), "-")
            for heading in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_the_readme_is_short() -> None:
    assert len(README.splitlines()) <= MAX_LINES


def test_its_make_commands_are_targets_of_the_makefile() -> None:
    named = set(re.findall(r"(?:^ *|`)make (\w+)", README, re.M))
    assert {"run", "test", "docs"} <= named
    targets = set(re.findall(r"^(\w+):", MAKEFILE, re.M))
    assert named <= targets


def test_the_test_command_builds_the_site_strictly() -> None:
    recipe = MAKEFILE.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs build --strict" in recipe
    # --quiet hides the warnings --strict counts: the build would pass with a broken link.
    assert not re.search(r"mkdocs build[^\n]*(--quiet|-q\b)", recipe)
    assert "pytest" in recipe and "ruff" in recipe and "mypy" in recipe
    docs = MAKEFILE.split("\ndocs:", 1)[1].split("\n\n", 1)[0]
    assert "mkdocs serve" in docs


def test_its_sonify_command_lines_parse() -> None:
    """Every `sonify …` line in its code blocks is one the command line accepts."""
    parser = build_parser(Config())
    lines = [line.split("#", 1)[0].strip() for block in code_blocks("sh")
             for line in block.splitlines()]
    commands = [line for line in lines if re.search(r"(^|\s|/)sonify ", line)]
    assert commands
    for line in commands:
        words = shlex.split(line)
        argv = words[next(i for i, w in enumerate(words) if w.endswith("sonify")) + 1:]
        parser.parse_args(argv)  # SystemExit (a failure here) on a mistake
    named = set(re.findall(r"`sonify (\w[\w-]*)", README))
    assert named <= {command.name for command in COMMANDS}


def test_its_links_lead_to_pages_and_headings_that_exist() -> None:
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    in_nav = set(re.findall(r"'([\w/.-]+\.md)'", str(nav)))
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README)
    assert len(links) >= 20
    for path, anchor in links:
        page = ROOT / path
        assert page.is_file(), path
        assert path.removeprefix("docs/") in in_nav | {"index.md"}, path
        assert not anchor or anchor in anchors(page), f"{path}#{anchor}"
    linked = {path for path, _ in links}
    assert {f"docs/{page}" for page in in_nav} <= linked  # every page is reachable from here


def test_the_example_configurations_are_valid() -> None:
    blocks = code_blocks("toml")
    assert blocks
    for block in blocks:
        parse_config(tomllib.loads(block), source="README", environ={})  # ConfigError if not


def test_the_settings_it_names_exist_with_the_defaults_it_shows() -> None:
    named = re.findall(r"`\[(\w+)\] (\w+)", README)
    assert len(named) >= 15
    for name, key in named:
        assert name in SECTIONS and hasattr(SECTIONS[name](), key), f"[{name}] {key}"
    rows = [row for row in section("## The settings people change").splitlines()
            if row.startswith("| `[")]
    assert len(rows) >= 8
    for row in rows:
        settings_cell, default_cell = row.strip("|").split(" | ")[:2]
        keys = re.findall(r"`\[(\w+)\] (\w+)`", settings_cell)
        shown = [tomllib.loads(f"v = {value}")["v"]
                 for value in re.findall(r"`([^`]+)`", default_cell)]
        if len(shown) == 1:  # one default shown for keys that share it
            shown *= len(keys)
        assert len(keys) == len(shown), row
        for (name, key), value in zip(keys, shown, strict=True):
            assert getattr(SECTIONS[name](), key) == value, f"[{name}] {key}"


def test_the_variables_it_names_are_read() -> None:
    named = set(re.findall(r"\b(SONIFY_[A-Z_]+)", README))
    assert set(ENV_SECRETS.values()) <= named
    assert named <= {*ENV_SECRETS.values(), ENV_PRESET}


def test_it_does_not_read_as_if_a_gpu_were_required() -> None:
    intro = README.split("\n## ", 1)[0]
    assert "CPU" in intro and "GPU worker" not in intro
    needs = section("## What it needs")
    assert "GPU (optional)" in needs


def test_its_memory_figures_are_the_measured_ones() -> None:
    install = (ROOT / "docs/running/install.md").read_text(encoding="utf-8")
    ((default, stable_audio),) = re.findall(
        r"^\| peak while answering a batch of 4 [^|]*\| ([\d.]+ GiB) \| ([\d.]+ GiB) \|$",
        install, re.M)
    needs = section("## What it needs")
    assert f"peaks at {default} answering a batch of 4 pictures" in needs
    assert f"{stable_audio} with Stable Audio 3" in needs


@pytest.mark.parametrize("backend", sorted(SOUND_BACKENDS))
def test_the_licence_of_every_sound_backend_is_stated(backend: str) -> None:
    licences = section("## Licences")
    assert SOUND_BACKENDS[backend].default_model in licences, backend
    assert "non-commercial" in licences and "CC BY-NC-SA" in licences


def test_the_example_configuration_points_at_pages_that_exist() -> None:
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    pages = re.findall(r"\b(docs/[\w/.-]+\.md)", example)
    assert pages
    for path in pages:
        assert (ROOT / path).is_file(), path
    assert "README" not in example  # the details moved to the documentation site
