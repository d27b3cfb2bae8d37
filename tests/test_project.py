"""Project-level checks: the Dockerfile lints clean, CI runs the README's test command, `make run`
has its own stamp and the Python version is checked before any download.

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


def make(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    return subprocess.run(["make", "--no-print-directory", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_make_run_installs_sonify_without_the_test_tools(tmp_path: Path) -> None:
    """`make run` has a stamp of its own and installs the runtime dependencies only."""
    venv = tmp_path / "venv"
    dry = make("-n", "run", f"VENV={venv}")
    assert dry.returncode == 0, dry.stderr
    installs = [line for line in dry.stdout.splitlines() if "pip install" in line]
    assert installs and all("[test]" not in line for line in installs)
    assert f"-e . && touch {venv}/.installed-run" in dry.stdout
    assert "[test]" in make("-n", "test", f"VENV={venv}").stdout  # `make test` adds them


def test_make_checks_the_python_version_before_any_download(tmp_path: Path) -> None:
    """A Python older than requires-python is refused in one line, before a venv is made."""
    old_python = tmp_path / "python3.10"
    old_python.write_text("#!/bin/sh\necho 3.10\n", encoding="utf-8")  # answers like 3.10 would
    old_python.chmod(0o755)
    venv = tmp_path / "venv"
    for target in ("run", "test"):
        proc = make(target, f"PYTHON={old_python}", f"VENV={venv}")
        assert proc.returncode != 0
        assert proc.stderr.splitlines()[0] == (
            f"make: {old_python} is Python 3.10; Sonify needs 3.11 or newer (give another as "
            "PYTHON=python3.11)")
        assert not venv.exists()
    assert make("check-python").returncode == 0  # the Python running these tests is new enough
    missing = make("check-python", f"PYTHON={tmp_path / 'nowhere'}")
    assert missing.returncode != 0 and "cannot run" in missing.stderr
