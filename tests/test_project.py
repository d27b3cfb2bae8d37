"""Project-level checks: the Dockerfile lints clean, CI runs the README's test command.

The layout table is checked where it now lives, in tests/test_docs.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[1] / ".venv/bin/hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed")
    proc = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "make test" in readme and "make run" in readme
    assert ci.rstrip().endswith("make test")


def test_adapters_reach_the_request_log_only_through_the_contract() -> None:
    """`lint-imports` keeps `bot` from importing storage; this keeps it from reaching into the
    request log that `Services` holds (for the statistics) by attribute."""
    reaching = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "bot").rglob("*.py"))
                for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if ".request_log" in line.split("#", 1)[0]]
    assert reaching == []
