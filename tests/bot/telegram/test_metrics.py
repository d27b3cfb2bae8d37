"""A Telegram photo on /metrics: counted as done, with its fetch, decode and delivery timed,
and /readyz names the bot among the parts it checks."""

from __future__ import annotations

import asyncio

from tests.bot.telegram.conftest import ANA, Harness


async def test_a_photo_is_counted_with_its_adapter_stages(bot: Harness) -> None:
    assert bot.services is not None
    ops = bot.services.ops
    assert bot.adapter is not None
    ops.health.add("telegram", bot.adapter.ready)  # as `sonify run` does for each adapter
    msg = await bot.send_photo(ANA)
    await bot.voice_for(msg)
    health = await ops.health.readiness()  # the models loaded for the first photo
    assert health.checks == {"database": "ok", "models": "ok", "telegram": "ok"}
    registry = ops.metrics.registry

    def stage(name: str) -> float | None:
        return registry.get_sample_value("sonify_stage_seconds_count", {"stage": name})

    async with asyncio.timeout(10):  # timed once posting the voice note has returned
        while stage("delivery") != 1:  # noqa: ASYNC110 (no event marks the observation)
            await asyncio.sleep(0.02)
    assert registry.get_sample_value("sonify_requests_total", {
        "platform": "telegram", "kind": "photo", "outcome": "done", "code": ""}) == 1
    assert (stage("fetch"), stage("decode"), stage("sound")) == (1, 1, 1)
