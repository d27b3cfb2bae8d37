"""A burst of photos, `sonify run` killed with SIGKILL at several moments, then restarted:
every sender gets exactly one answer (a clip whose upload was in flight at the kill may
come twice), and no update is taken twice."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bot.telegram.conftest import TOKEN, picture, private
from tests.bot.telegram.fake_bot_api import Call, FakeBotAPI
from tests.conftest import tiny_toml
from tests.sonify_process import SonifyProcess, offline_env

SENDERS = 20
ANSWERED_WITHIN_S = 180.0


def sender(n: int) -> dict[str, Any]:
    return {"id": 5000 + n, "is_bot": False, "first_name": f"User{n}", "language_code": "en"}


def answers(fake: FakeBotAPI, message_id: int) -> list[Call]:
    """Voice notes (or apologies) answering one message: what its sender received."""
    return [c for c in fake.calls
            if c.reply_to == message_id and isinstance(c.result, dict)
            and (c.method == "sendVoice" or (c.method == "sendMessage"
                                             and c.text.startswith("Sorry")))]


def rows(db: Path) -> list[tuple[str, str, str | None, str | None]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT dedupe_key, status, delivery, reason FROM requests"
                            ).fetchall()


async def moment_reached(fake: FakeBotAPI, moment: str, last_update: int) -> None:
    if moment == "after_confirm":  # Telegram was told the burst is taken; nothing shown yet
        await fake.wait_for("*", lambda c: fake.confirmed > last_update, within=60)
    elif moment == "after_first_queued":
        await fake.wait_for("sendMessage", lambda c: c.text.startswith("Queued"), within=60)
    else:  # "mid_batch": the model is rendering a batch
        await fake.wait_for("editMessageText", lambda c: c.text.startswith(
            ("Listening", "Rendering")), within=60)


@pytest.mark.parametrize("moment", ["after_confirm", "after_first_queued", "mid_batch"])
async def test_a_burst_killed_at_any_moment_is_answered_once_each(
        moment: str, tmp_path: Path, fake: FakeBotAPI, tiny_pipeline: object) -> None:
    # tiny_pipeline: the tiny models are built on disk before the child loads them.
    data = tmp_path / "data"
    config = tmp_path / "sonify.toml"
    config.write_text(tiny_toml(
        data, jobs={"max_batch": 4, "per_user_per_hour": 100},
        telegram={"api_base_url": fake.api_base, "file_base_url": fake.file_base,
                  "poll_timeout_s": 1.0, "progress_interval_s": 0.0}), encoding="utf-8")
    env = offline_env(SONIFY_TELEGRAM_TOKEN=TOKEN, SONIFY_MODELS="tiny")
    child = await SonifyProcess(config, tmp_path / "run.log", env).start()
    try:
        await child.unless_exited(fake.wait_for("deleteWebhook", within=120))  # polling
        messages = []
        for n in range(SENDERS):
            user = sender(n)
            update = await fake.push({"message": {
                "message_id": fake.new_message_id(), "date": int(time.time()),
                "chat": private(user), "from": user,
                "photo": [{"file_id": fake.add_file(picture()), "file_unique_id": f"p{n}",
                           "width": 96, "height": 64}]}})
            messages.append(update)
        last_update = messages[-1]["update_id"]
        await child.unless_exited(moment_reached(fake, moment, last_update))
        await child.kill()
        # Whatever was being uploaded at the kill may arrive twice; nothing else may.
        in_flight = {key for key, _, delivery, _ in rows(data / "sonify.db")
                     if delivery == "sending"}

        await child.start()

        async def everyone_answered() -> None:
            await fake.wait_for("*", lambda c: all(
                answers(fake, m["message"]["message_id"]) for m in messages),
                within=ANSWERED_WITHIN_S)

        await child.unless_exited(everyone_answered())
        assert await child.terminate() == 0, child.tail()
    finally:
        await child.ensure_stopped()

    final = rows(data / "sonify.db")
    # One row per update: none was taken twice; each ended with its answer sent.
    assert sorted(key for key, *_ in final) == sorted(
        f"telegram:update:{m['update_id']}" for m in messages)
    assert {(status, delivery) for _, status, delivery, _ in final} == {("done", "sent")}
    for update in messages:
        got = answers(fake, update["message"]["message_id"])
        key = f"telegram:update:{update['update_id']}"
        assert len(got) == 1 or (len(got) == 2 and key in in_flight), (key, len(got))
        assert all(c.method == "sendVoice" for c in got)
    text = child.text()
    assert "Traceback" not in text and TOKEN.split(":")[1] not in text
