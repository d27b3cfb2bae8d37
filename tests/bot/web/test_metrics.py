"""GET /metrics: after requests of each outcome, a scrape (read with prometheus_client's own
parser) has every listed series, with the counts of what happened."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from bot.ops.server import OpsServer
from bot.web.server import create_app
from core.services import Services
from tests.bot.web.conftest import expect_error, png_bytes, read_events, upload_form
from tests.conftest import make_config
from tests.core.jobs.engine_support import POISON_COLOR, WrappedPipeline

ROOT = Path(__file__).resolve().parents[3]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """(family names, {(sample name, sorted labels): value}) of a scrape."""
    families = list(text_string_to_metric_families(text))
    samples: Samples = {}
    for family in families:
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return {family.name for family in families}, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def magenta_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (48, 48), POISON_COLOR).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
async def poisoned_web(tmp_path: Path, tiny_pipeline: Any) -> AsyncIterator[TestClient]:
    """The web app over a pipeline that fails for magenta pictures; 3 requests an hour each."""
    config = make_config(tmp_path, web={"per_address_per_hour": 3})
    services = await Services.create(config,
                                     pipeline_factory=lambda: WrappedPipeline(tiny_pipeline))
    client = TestClient(TestServer(create_app(services)))
    await client.start_server()
    yield client
    await client.close()
    await services.close()


async def finished(client: TestClient, response: Any) -> str:
    assert response.status == 202, await response.text()
    job_id = (await response.json())["id"]
    return (await read_events(client, job_id))[-1][0]


async def test_a_scrape_counts_each_outcome_and_has_every_series(
        poisoned_web: TestClient, image_host: str) -> None:
    client = poisoned_web
    # done (a link: fetched, decoded, rendered), then the same picture uploaded (cache hit),
    # a picture the pipeline fails on, and one request over the address's hourly limit.
    assert await finished(client, await client.post(
        "/api/jobs", json={"url": f"{image_host}/cat.png"})) == "done"
    assert await finished(client, await client.post(
        "/api/jobs", data=upload_form(png_bytes()))) == "done"
    assert await finished(client, await client.post(
        "/api/jobs", data=upload_form(magenta_png()))) == "failed"
    await expect_error(await client.post("/api/jobs", data=upload_form(png_bytes())), 429,
                       "address_hourly")

    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert resp.headers["Cache-Control"] == "no-store"
    names, samples = parse(await resp.text())

    assert {"sonify_requests", "sonify_request_seconds", "sonify_queue_length",
            "sonify_queue_wait_seconds", "sonify_batch_size", "sonify_stage_seconds",
            "sonify_clip_cache_lookups", "sonify_clip_cache_bytes",
            "sonify_clip_cache_evictions", "sonify_workers_alive", "sonify_worker_jobs",
            "sonify_database_errors", "sonify_redis_errors", "sonify_build_info"} <= names
    requests = {labels: n for (name, labels), n in samples.items()
                if name == "sonify_requests_total"}
    assert requests == {
        (("code", ""), ("kind", "url"), ("outcome", "done"), ("platform", "web")): 1,
        (("code", ""), ("kind", "upload"), ("outcome", "cache_hit"), ("platform", "web")): 1,
        (("code", "failed"), ("kind", "upload"), ("outcome", "failed"),
         ("platform", "web")): 1,
        (("code", "address_hourly"), ("kind", "upload"), ("outcome", "refused"),
         ("platform", "web")): 1,
    }
    for outcome in ("done", "cache_hit", "failed"):
        assert value(samples, "sonify_request_seconds_count", platform="web",
                     outcome=outcome) == 1
    # One job rendered to the end: its caption, sound, encoding and queue wait were timed;
    # one link fetched; three pictures decoded (the refused request was never read).
    stages = {stage: value(samples, "sonify_stage_seconds_count", stage=stage)
              for stage in ("fetch", "decode", "caption", "sound", "encode", "delivery")}
    assert stages == {"fetch": 1, "decode": 3, "caption": 1, "sound": 1, "encode": 1,
                      "delivery": 0}
    assert value(samples, "sonify_stage_seconds_sum", stage="sound") > 0
    assert value(samples, "sonify_queue_wait_seconds_count") == 1
    # Two batches of one (the done job's, the failed job's); the cache hit took none.
    assert value(samples, "sonify_batch_size_count") == 2
    assert value(samples, "sonify_batch_size_sum") == 2
    assert value(samples, "sonify_batch_size_bucket", le="1.0") == 2
    assert value(samples, "sonify_queue_length") == 0
    assert value(samples, "sonify_clip_cache_lookups_total", result="hit") == 1
    assert value(samples, "sonify_clip_cache_lookups_total", result="miss") >= 2
    assert value(samples, "sonify_clip_cache_evictions_total") == 0
    assert value(samples, "sonify_clip_cache_bytes") > 0
    assert value(samples, "sonify_workers_alive") == 1
    assert value(samples, "sonify_worker_jobs_total", worker="local") == 2
    for kind in ("unavailable", "damaged"):
        assert value(samples, "sonify_database_errors_total", kind=kind) == 0
    assert value(samples, "sonify_redis_errors_total") == 0
    assert value(samples, "sonify_build_info", role="run", version=value_of_version(samples)
                 ) == 1
    # The sample Grafana dashboard asks only for series that exist.
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "sonify.json").read_text("utf-8"))
    asked = {name for panel in dashboard["panels"] for target in panel.get("targets", [])
             for name in re.findall(r"sonify_\w+", target["expr"])}
    assert len(asked) >= 10
    assert asked <= {name for name, _ in samples}


def value_of_version(samples: Samples) -> str:
    ((_, labels),) = [key for key in samples if key[0] == "sonify_build_info"]
    return dict(labels)["version"]


async def test_metrics_follow_the_web_token_or_move_to_their_own_address(
        tmp_path: Path) -> None:
    token = "metrics-test-token-0123456789"
    services = await Services.create(make_config(tmp_path / "a", web={"token": token}))
    client = TestClient(TestServer(create_app(services)))
    await client.start_server()
    try:
        auth = {"Authorization": f"Bearer {token}"}
        # Until the models are loaded, the process lives but is not ready.
        resp = await client.get("/readyz", headers=auth)
        assert resp.status == 503
        assert await resp.json() == {"status": "not ready", "failing": ["models"],
                                     "checks": {"database": "ok", "models": "not loaded"}}
        assert (await client.get("/livez", headers=auth)).status == 200
        await services.engine.load_models()
        for path in ("/metrics", "/readyz", "/livez"):
            await expect_error(await client.get(path), 401, "unauthorized")
            resp = await client.get(path, headers={"Authorization": f"Bearer {token}"})
            assert resp.status == 200, path
            assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        await expect_error(await client.post("/metrics", headers={
            "Authorization": f"Bearer {token}"}), 405, "method_not_allowed")
        # OpenMetrics when the scraper asks for it.
        resp = await client.get("/metrics", headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/openmetrics-text; version=1.0.0"})
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await resp.text()).rstrip().endswith("# EOF")
    finally:
        await client.close()
        await services.close()

    # With [metrics] listen, /metrics is there (no token) and not on the page.
    services = await Services.create(make_config(tmp_path / "b", web={"token": token},
                                                 metrics={"listen": "127.0.0.1:0"}))
    client = TestClient(TestServer(create_app(services)))
    await client.start_server()
    ops = OpsServer(services.ops, "127.0.0.1", 0)
    await ops.start()
    await services.engine.load_models()
    try:
        await expect_error(await client.get("/metrics", headers={
            "Authorization": f"Bearer {token}"}), 404, "not_found")
        async with client.session.get(f"{ops.url}/metrics") as resp:
            assert resp.status == 200
            names, _ = parse(await resp.text())
            assert "sonify_requests" in names and "sonify_queue_length" in names
        async with client.session.get(f"{ops.url}/readyz") as resp:
            assert resp.status == 200
            assert await resp.json() == {"status": "ready",
                                         "checks": {"database": "ok", "models": "ok"}}
        async with client.session.get(f"{ops.url}/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        await ops.stop()
        await client.close()
        await services.close()
