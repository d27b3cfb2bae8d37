"""The Docker image carries one CUDA stack (the torch wheels'), and the README, the Docker page
and the Dockerfile state the host driver those wheels need. Read from the installed torch, so a
torch upgrade that moves to another CUDA fails here until every text says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
# NVIDIA's minimum driver branch for each CUDA major release (minor version compatibility:
# docs.nvidia.com/deploy/cuda-compatibility): 12.x needs 525 or newer, 13.x needs 580.
MINIMUM_DRIVER = {12: 525, 13: 580}


def docker_page() -> str:
    return (ROOT / "docs/running/docker.md").read_text(encoding="utf-8")


def installed_torch() -> str:
    return torch.__version__.split("+", 1)[0]


def test_the_image_installs_the_tested_torch_from_its_cuda_index() -> None:
    cuda = torch.version.cuda
    if cuda is None:
        pytest.skip("a CPU-only torch build is installed: nothing to compare the image with")
    major, minor = cuda.split(".")[:2]
    assert f"torch=={installed_torch()}" in DOCKERFILE
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"torch=={installed_torch()}" in makefile  # the version the tests run on
    assert f"https://download.pytorch.org/whl/cu{major}{minor}" in DOCKERFILE


def test_no_second_cuda_stack_in_the_image() -> None:
    bases = re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M)
    assert bases and not any("cuda" in base.lower() or "nvidia" in base.lower()
                             for base in bases)
    assert not re.search(r"apt-get install[^\n]*(cuda|cudnn|libnvidia)", DOCKERFILE)


def test_the_driver_requirement_matches_the_wheels_cuda() -> None:
    cuda = torch.version.cuda
    if cuda is None:
        pytest.skip("a CPU-only torch build is installed: no driver requirement to check")
    major, minor = (int(part) for part in cuda.split(".")[:2])
    driver = MINIMUM_DRIVER[major]
    for name, text in (("Dockerfile", DOCKERFILE), ("docs, Docker", docker_page()),
                       ("README", README)):
        assert f"CUDA {major}.{minor}" in text, name
        assert f"R{driver} or newer" in text, name
    # The container toolkit refuses an older driver at `docker run` instead of torch falling
    # back to the CPU: the requirement is enforced, not only written down.
    assert f'NVIDIA_REQUIRE_CUDA="cuda>={major}.{minor}"' in DOCKERFILE
    assert "compute,utility" in DOCKERFILE  # without "compute" no CUDA library is mounted


def test_the_oldest_gpu_the_wheels_run_on_is_stated() -> None:
    # torch.cuda.get_arch_list() needs a GPU; this is what it reads.
    flags = getattr(torch._C, "_cuda_getArchFlags", lambda: None)()
    if not flags:
        pytest.skip("this torch build lists no CUDA architectures")
    oldest = min(int(flag.removeprefix("sm_")) for flag in flags.split() if flag.startswith("sm_"))
    capability = f"{oldest // 10}.{oldest % 10}"
    assert f"compute capability {capability}" in docker_page()
    assert f"compute capability {capability}" in DOCKERFILE
    assert f"compute capability {capability}" in README


def test_the_compose_file_runs_real_commands_with_one_gpu_per_worker() -> None:
    import yaml

    from bot.cli import COMMANDS
    from core.config import ENV_SECRETS

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert {"redis", "postgres", "adapters"} <= set(services)
    workers = {name: s for name, s in services.items() if name.startswith("worker")}
    assert len(workers) >= 2
    commands = {c.name for c in COMMANDS}
    for name in ("adapters", *workers):
        argv = services[name]["command"]
        assert argv[0] == "sonify" and argv[1] in commands and "--config" in argv
        assert set(services[name]["environment"]) <= {
            *ENV_SECRETS.values(), "SONIFY_MODELS"}  # only variables Sonify reads
    assert services["adapters"]["command"][1] == "run"
    gpus = []
    for worker in workers.values():
        assert worker["command"][1] == "worker"
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        gpus += device["device_ids"]
    assert len(gpus) == len(set(gpus)) == len(workers)  # compose would give replicas one GPU
    assert {"postgres-data", "redis-data", "models"} <= set(compose["volumes"])


def test_every_sonify_service_checks_its_health_with_sonify_and_waits_on_health() -> None:
    import yaml

    from bot.cli import build_parser
    from core.config import Config

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    sonify = {name: s for name, s in services.items()
              if name == "adapters" or name.startswith("worker")}
    parser = build_parser(Config())
    for name, service in sonify.items():
        check = service["healthcheck"]
        assert check["test"][:3] == ["CMD", "sonify", "health"], name
        asked = parser.parse_args(check["test"][2:])  # the real command line takes it
        assert asked.command == "health" and not asked.live  # readiness, not liveness
        assert {"interval", "timeout", "retries", "start_period"} <= set(check)
        # It starts only once what it needs is healthy, and each of those has a check.
        needs = service["depends_on"]
        assert {"redis", "postgres"} <= set(needs), name
        for dependency, condition in needs.items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], dependency
        if name.startswith("worker"):
            # Its check asks the port its command serves /readyz on.
            argv = service["command"]
            port = argv[argv.index("--metrics-port") + 1]
            assert asked.port == int(port)
            assert argv[argv.index("--metrics-host") + 1] == "0.0.0.0"  # for a Prometheus
    # The adapters wait for the first worker: the bots answer once something can render.
    assert "worker-0" in services["adapters"]["depends_on"]
