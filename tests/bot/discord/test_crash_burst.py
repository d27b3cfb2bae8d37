"""`sonify run` killed with SIGKILL in the middle of a burst of posted pictures, and more
pictures posted while it is down: after the restart every picture is answered once (a clip
whose upload was in flight at the kill may come twice)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tests.bot.discord.conftest import TOKEN, png_bytes
from tests.bot.discord.fake_discord import ALICE, BOB, CAROL, WATCHED, FakeDiscord, Upload
from tests.conftest import tiny_toml
from tests.sonify_process import SonifyProcess, offline_env

ANSWERED_WITHIN_S = 180.0


def answers(fake: FakeDiscord, message: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in fake.replies_to(message["id"]) if m["attachments"]]


def delivery_states(db: Path) -> dict[str, str | None]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT dedupe_key, delivery FROM requests").fetchall())


async def test_a_burst_killed_mid_way_and_pictures_posted_while_down_are_answered_once(
        fake: FakeDiscord, tmp_path: Path, tiny_pipeline: Any) -> None:
    # tiny_pipeline: the tiny models are built on disk before the child loads them.
    data = tmp_path / "data"
    config = tmp_path / "sonify.toml"
    config.write_text(tiny_toml(data, jobs={"max_batch": 3, "per_user_concurrent": 10},
                                discord={"api_base_url": fake.api_url,
                                         "gateway_url": fake.gateway_url,
                                         "channels": [WATCHED], "sync_commands": False,
                                         "progress_interval_s": 0.0}), encoding="utf-8")
    child = SonifyProcess(config, tmp_path / "run.log", offline_env(SONIFY_DISCORD_TOKEN=TOKEN))
    await child.start()
    try:
        await child.unless_exited(fake.until(lambda: fake.identified, timeout=120))
        authors = (ALICE, BOB, CAROL)
        burst = [await fake.send_message(WATCHED, authors[n % 3], "",
                                         [Upload(f"b{n}.png", png_bytes(100 + n))])
                 for n in range(12)]
        # Killed while a batch renders.
        await child.unless_exited(fake.until(lambda: any(
            m["content"].startswith(("Listening", "Rendering")) for m in fake.messages.values()),
            timeout=60))
        await child.kill()
        in_flight = {key for key, state in delivery_states(data / "sonify.db").items()
                     if state == "sending"}
        away = [await fake.send_message(WATCHED, authors[n % 3], "",
                                        [Upload(f"a{n}.png", png_bytes(200 + n))],
                                        bot_online=False)
                for n in range(3)]
        dm_away = await fake.send_message(None, ALICE, "", [Upload("dm.png", png_bytes(300))],
                                          bot_online=False)
        await child.start()
        everything = [*burst, *away]
        await child.unless_exited(fake.until(
            lambda: all(answers(fake, m) for m in everything), timeout=ANSWERED_WITHIN_S))
        assert await child.terminate() == 0, child.tail()
    finally:
        await child.ensure_stopped()

    for message in everything:
        key = f"discord:message:{message['id']}:0"
        count = len(answers(fake, message))
        assert count == 1 or (count == 2 and key in in_flight), (key, count)
    # A DM the bot never saw before is no channel it tracks: it is not read back.
    assert answers(fake, dm_away) == []
    states = delivery_states(data / "sonify.db")
    assert len(states) == len(everything) and set(states.values()) == {"sent"}
    assert "Traceback" not in child.text() and TOKEN not in child.text()
