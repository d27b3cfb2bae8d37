"""A real nginx (Debian's package, run as an unprivileged user) in front of a real `sonify run`:
two clients behind it are limited apart, and a direct client cannot pass itself off as
someone else with a forged X-Forwarded-For. The clients come from their own loopback
addresses (127.0.0.2, .3, .4); nginx reaches Sonify from 127.0.0.1, the trusted proxy."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from core.storage.request_log import RequestLog
from tests.bot.web.conftest import png_bytes, upload_form
from tests.conftest import tiny_toml
from tests.local_servers import NginxServer, free_port
from tests.sonify_process import SonifyProcess, offline_env

pytestmark = pytest.mark.timeout(300)

READY_WITHIN_S = 120.0
PER_HOUR = 2  # [web] per_address_per_hour


def write_config(root: Path, port: int) -> Path:
    path = root / "sonify.toml"
    path.write_text(tiny_toml(
        root / "data",
        jobs={"per_user_concurrent": 10, "per_user_per_hour": 100},
        web={"enabled": "true", "port": port, "trusted_proxies": ["127.0.0.1"],
             "per_address_per_hour": PER_HOUR, "new_browsers_per_hour": 1},
        logging={"format": "json"}), encoding="utf-8")
    return path


def session_from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from `address` (any 127.0.0.0/8 address is local)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def submit(session: aiohttp.ClientSession, base: str, **headers: str) -> tuple[int, Any]:
    async with session.post(f"{base}/api/jobs", data=upload_form(png_bytes()),
                            headers=headers) as resp:
        return resp.status, await resp.json()


async def new_identity(session: aiohttp.ClientSession, base: str) -> bool:
    """Whether opening the page gave this client a new browser identity."""
    async with session.get(f"{base}/") as resp:
        assert resp.status == 200
        given = "sonify_uid" in resp.cookies
    session.cookie_jar.clear()
    return given


async def serving(proc: SonifyProcess, base: str) -> None:
    async def answers() -> None:
        while True:
            try:
                async with aiohttp.ClientSession() as session, \
                        session.get(base + "/livez") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)

    await proc.unless_exited(asyncio.wait_for(answers(), READY_WITHIN_S))


async def test_clients_behind_nginx_are_limited_apart_and_a_forged_header_is_ignored(
        tmp_path: Path) -> None:
    port = free_port()
    direct = f"http://127.0.0.1:{port}"
    proc = SonifyProcess(write_config(tmp_path, port), tmp_path / "run.log",
                         offline_env(OMP_NUM_THREADS="1"))
    nginx = NginxServer(port)
    try:
        await proc.start()
        await serving(proc, direct)
        await asyncio.to_thread(nginx.start)
        proxied = f"http://127.0.0.1:{nginx.port}"
        async with session_from("127.0.0.2") as ann, session_from("127.0.0.3") as bob, \
                session_from("127.0.0.4") as eve:
            # Ann uses up her address's hour; Bob, behind the same proxy, still gets in.
            assert [(await submit(ann, proxied))[0] for _ in range(PER_HOUR + 1)] == [
                202, 202, 429]
            status, body = await submit(ann, proxied)
            assert (status, body["error"]["code"]) == (429, "address_hourly")
            assert (await submit(bob, proxied))[0] == 202
            # Eve connects directly and names someone new each time: still one address.
            forged = [(await submit(eve, direct, **{"X-Forwarded-For": f"198.51.100.{n}"}))[0]
                      for n in range(PER_HOUR + 1)]
            assert forged == [202, 202, 429]
            # New browser identities, one per address an hour: the same story.
            assert await new_identity(ann, proxied) and not await new_identity(ann, proxied)
            assert await new_identity(bob, proxied)
            assert await new_identity(eve, direct)
            assert not await new_identity(eve, direct)
            eve.cookie_jar.clear()
            async with eve.get(f"{direct}/", headers={"X-Forwarded-For": "198.51.100.77"}
                               ) as resp:
                assert "sonify_uid" not in resp.cookies
    finally:
        await asyncio.to_thread(nginx.stop)
        await proc.terminate()

    log = RequestLog(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sonify.db'}")
    try:
        rows = await log.rows_since(0)
    finally:
        await log.close()
    accepted = sorted(r.user_id for r in rows if r.status != "rejected")
    refused = sorted((r.user_id, r.reason, r.times) for r in rows if r.status == "rejected")
    assert accepted == ["ip:127.0.0.2", "ip:127.0.0.2", "ip:127.0.0.3", "ip:127.0.0.4",
                        "ip:127.0.0.4"]
    assert [(user, reason) for user, reason, _ in refused] == [
        ("ip:127.0.0.2", "address_hourly"), ("ip:127.0.0.4", "address_hourly")]
    assert sum(times for *_, times in refused) == 3  # Ann's two folded into one row

    # The JSON log: every line an object; the access log names the client nginx forwarded
    # (never the forged one), the request lines carry their fields.
    lines = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()
             if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "sonify.web.access"]
    submitted = [(line["client"], line["status"]) for line in access
                 if line["method"] == "POST" and line["route"] == "/api/jobs"]
    assert sorted(submitted) == [("127.0.0.2", 202), ("127.0.0.2", 202), ("127.0.0.2", 429),
                                 ("127.0.0.2", 429), ("127.0.0.3", 202), ("127.0.0.4", 202),
                                 ("127.0.0.4", 202), ("127.0.0.4", 429)]
    assert not any(line["client"].startswith("198.51.100.") for line in access)
    refusals = [line for line in lines if line["logger"] == "sonify.requests"
                and line.get("outcome") == "refused"]
    assert refusals and {line["code"] for line in refusals} == {"address_hourly"}
    assert {line["platform"] for line in refusals} == {"web"}
    assert all(len(line["user"]) == 16 and "127.0.0" not in line["user"] for line in refusals)
