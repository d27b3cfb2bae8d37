"""The documentation site cannot drift: its tables of defaults and limits are read back and
compared with the configuration, the configuration reference covers every key, the layout
table matches the folders, and its list of promises names tests that exist."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from core.config import ENV_PRESET, ENV_SECRETS, SECTIONS

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# Units the limit tables use, in the configuration's own units (bytes, seconds, pixels).
UNITS = {"": 1, "MB": 1_000_000, "million": 1_000_000, "s": 1, "px": 1}


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def all_pages() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md")))


def section(text: str, heading: str) -> str:
    """The text under `heading` (a whole heading line), up to the next heading of the same or
    a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(f"\n{heading}\n") + len(heading) + 2
    ends = [m.start() for m in re.finditer(rf"^#{{1,{level}}} ", text[start:], re.M)]
    return text[start:start + ends[0]] if ends else text[start:]


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
    """A value as the pages write it in backticks: TOML where it parses, else the text."""
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


@functools.cache
def config_reference() -> ModuleType:
    """The MkDocs hook that renders the configuration reference (docs/hooks), loaded as
    MkDocs loads it: from its file."""
    spec = importlib.util.spec_from_file_location(
        "sonify_docs_config_reference", DOCS / "hooks" / "config_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "path", "heading"), [
    ("telegram", "running/telegram.md", "## `[telegram]` settings"),
    ("discord", "running/discord.md", "## `[discord]` settings")])
def test_settings_tables_list_every_key_with_its_default(name: str, path: str,
                                                         heading: str) -> None:
    ((_, rows),) = tables(section(page(path), heading), "| key | default |")
    listed: dict[str, Any] = {}
    for key_cell, default_cell, *_ in rows:
        keys = re.findall(r"`([^`]+)`", key_cell)
        values = [literal(v) for v in re.findall(r"`([^`]*)`", default_cell)]
        assert len(keys) == len(values), (key_cell, default_cell)
        listed.update(zip(keys, values, strict=True))
    assert listed == defaults(name)


def test_limit_tables_show_the_configured_defaults() -> None:
    checked = 0
    for before, rows in tables(all_pages(), "| limit | default | key"):
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
    assert checked >= 20  # the image, video and web limits: the tables were found and read


def test_the_web_example_is_the_default_configuration() -> None:
    block = re.search(r"```toml\n(\[web\]\n.*?)```", page("running/web.md"), re.S)
    assert block is not None
    shown = tomllib.loads(block.group(1))["web"]
    web = defaults("web")
    assert shown == {key: web[key] for key in shown}


def test_the_environment_table_is_every_variable_the_configuration_reads() -> None:
    text = section(page("running/configuration.md"), "## Secrets and the environment")
    ((_, rows),) = tables(text, "| variable | replaces |")
    listed = {re.findall(r"`(\w+)", variable)[0]: replaces for variable, replaces in rows}
    assert set(listed) == {*ENV_SECRETS.values(), ENV_PRESET}
    for (name, key), variable in ENV_SECRETS.items():
        assert listed[variable] == f"`[{name}] {key}`"


def test_the_configuration_reference_documents_every_key() -> None:
    """Every key of every section has a row in the rendered reference, with the description
    from the comment above it in config.example.toml and the built-in default."""
    hook = config_reference()
    example = (ROOT / "config.example.toml").read_text(encoding="utf-8")
    sections = {s.name: s for s in hook.example_sections(example)}
    assert set(sections) == set(SECTIONS)
    rendered = "\n" + hook.render(example)
    for name in SECTIONS:
        keys = {key.name: key for key in sections[name].keys}
        assert set(keys) == set(defaults(name)), name
        for key_name, default in defaults(name).items():
            key = keys[key_name]
            assert len(key.description.split()) >= 3, f"[{name}] {key_name}: no description"
            assert literal(key.default) == default, f"[{name}] {key_name}"
            assert f"| `{key_name}` | `{key.default.replace('|', chr(92) + '|')}` |" in \
                section(rendered, f"### `[{name}]`"), f"[{name}] {key_name}"
    # The hook fills the page that asks for it, and only that one.
    marked = page("running/configuration.md")
    assert hook.MARKER in marked
    assert "\n### `[models]`\n" in hook.on_page_markdown(marked)
    assert hook.on_page_markdown("# Elsewhere\n") == "# Elsewhere\n"


def test_the_reference_says_what_each_key_allows() -> None:
    hook = config_reference()
    assert hook.allowed("jobs", "max_batch") == "1 to 64"
    assert hook.allowed("models", "device") == "`auto`, `cpu`, `cuda`"
    assert hook.allowed("telegram", "admins") == "a list of integers"
    assert hook.allowed("web", "trusted_proxies") == "a list of strings"
    assert hook.allowed("images", "allow_private_networks") == "true or false"


def test_the_layout_names_every_folder_and_only_real_ones() -> None:
    """The layout table matches the tree: one row per package folder, and docs/."""
    text = page("developing/layout.md")
    listed = set(re.findall(r"^\| `([\w/]+)/` \|", text, flags=re.MULTILINE))
    real = {str(p.relative_to(ROOT)) for top in ("core", "bot", "docs") for p in
            (ROOT / top).rglob("*") if p.is_dir() and "__pycache__" not in p.parts}
    real -= {d for d in real if d.startswith("docs/") and d != "docs/hooks"}  # pages, by reader
    real |= {"core", "bot", "tests", "bench", "docs"}
    assert listed == real


def test_every_promise_names_tests_that_exist() -> None:
    text = section(page("developing/tests.md"), "## What the tests keep")
    ((_, rows),) = tables(text, "| promise | kept by |")
    assert len(rows) >= 10
    for promise, kept_by in rows:
        references = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", kept_by)
        assert references, promise
        for path, test in references:
            source = (ROOT / path).read_text(encoding="utf-8")
            assert not test or re.search(rf"^(?:async )?def {test}\(", source, re.M), \
                f"{path}::{test} (for: {promise})"


def test_every_page_is_in_the_navigation() -> None:
    """mkdocs --strict says so too; this names the page without building the site."""
    import yaml

    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s+([\w/.-]+\.md)\s*$", nav, re.M))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    # Pages other branches add are put in nav when they land (docs/video.md, docs/admins.md).
    assert pages == listed
    config = yaml.safe_load(nav)
    assert config["docs_dir"] == "docs" and config["theme"]["name"] == "material"


def test_the_memory_bench_runs_as_documented(tmp_path: Path) -> None:
    """`bench/memory_bench.py` (the memory figures of the install page) runs and reports each
    moment; on the tiny models, so that it stays quick here."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "memory_bench.py"), "--preset", "tiny",
         "--batch", "2", "--steps", "1"], cwd=tmp_path, capture_output=True, text=True,
        timeout=600, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    for moment in ("libraries imported", "models built", "one picture answered",
                   "a batch of 2 answered"):
        assert re.search(rf"^{moment} +\d+\.\d\d GiB now +\d+\.\d\d GiB peak$", done.stdout,
                         re.M), moment
    assert "bench/memory_bench.py" in page("running/install.md")
