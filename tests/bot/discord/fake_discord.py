"""A fake Discord on loopback: the REST API (aiohttp) and the gateway (WebSocket).

The real discord.py library talks to it over real HTTP and WebSocket. The fake
keeps every call it received (with a sequence number and a timestamp, so tests
can check ordering, e.g. "deferred before the attachment was downloaded") and
the messages as a Discord client would show them (edits applied, files kept).
Tests drive users through `send_message`, `slash`, `context_menu`, `click` and
`submit_modal` (in `fake_users`), and wait for outcomes with `until`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from aiohttp import web

from tests.bot.discord.fake_payloads import (  # noqa: F401 - tests import the ids from here
    ADMIN,
    ALICE,
    BOB,
    BOT_ID,
    CAROL,
    CONTENT_TYPES,
    EPHEMERAL,
    GUILD_ID,
    JSON,
    LOADING,
    OTHER,
    OTHER_THREAD,
    STAFF,
    THREAD,
    VOICE,
    WATCHED,
    Call,
    Interaction,
    Part,
    T,
    Upload,
    application,
    guild,
    user,
)
from tests.bot.discord.fake_users import FakeUsers


def _json(data: Any, status: int = 200) -> web.Response:
    # discord.py parses JSON only when the content type is exactly application/json.
    return web.Response(body=json.dumps(data).encode(), status=status,
                        headers={"Content-Type": "application/json"})


class Snowflakes:
    """Ids as Discord makes them: growing, with the time of their making in them."""

    def __init__(self) -> None:
        self.last = 0

    def __iter__(self) -> Snowflakes:
        return self

    def __next__(self) -> int:
        self.last = max(self.last + 1, discord.utils.time_snowflake(discord.utils.utcnow()))
        return self.last


class FakeDiscord(FakeUsers):
    """REST + gateway + CDN on one loopback port."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.messages: dict[int, JSON] = {}  # every message, by id, as currently shown
        self.interactions: dict[str, Interaction] = {}  # by token
        self.cdn: dict[str, tuple[bytes, str]] = {}  # path -> (data, content type)
        self.forbidden_channels: set[int] = set()  # POST/PATCH messages there -> 403
        self.no_voice_channels: set[int] = set()  # voice messages there -> 403 (code 50173)
        self.expired_tokens: set[str] = set()  # interaction tokens past their 15 minutes
        self.bot_token: str | None = None  # when set, other bot tokens are refused
        # When set, IDENTIFY is answered by closing the gateway with this code (4014:
        # the bot asked for a privileged intent its application was not granted).
        self.identify_close_code: int | None = None
        self.identified: list[JSON] = []
        self.guild_locale = "en-US"
        self.dm_channels: dict[int, int] = {}  # user id -> DM channel id
        self._ids = Snowflakes()
        self._seq = itertools.count(1)
        self._changed = asyncio.Event()
        self._ws: web.WebSocketResponse | None = None
        self._ws_seq = 0
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._routes: list[tuple[str, re.Pattern[str], Callable[..., Awaitable[Any]]]] = [
            ("GET", re.compile(r"/oauth2/applications/@me"), self._application),
            ("POST", re.compile(r"/users/@me/channels"), self._open_dm),
            ("PUT", re.compile(r"/applications/\d+(?:/guilds/\d+)?/commands"), self._commands),
            ("POST", re.compile(r"/channels/(\d+)/typing"), self._no_content),
            ("POST", re.compile(r"/channels/(\d+)/messages"), self._create_message),
            ("PATCH", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._edit_message),
            ("DELETE", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._delete_message),
            ("GET", re.compile(r"/channels/(\d+)/messages/(\d+)"), self._get_message),
            ("GET", re.compile(r"/channels/(\d+)/messages"), self._history),
            ("GET", re.compile(r"/channels/(\d+)"), self._get_channel),
            ("POST", re.compile(r"/interactions/(\d+)/([^/]+)/callback"), self._callback),
            ("POST", re.compile(r"/webhooks/(\d+)/([^/]+)"), self._followup),
            ("PATCH", re.compile(r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)"), self._edit_hook),
            ("GET", re.compile(r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)"), self._get_hook),
            ("DELETE", re.compile(r"/webhooks/(\d+)/([^/]+)/messages/([^/]+)"),
             self._delete_hook),
        ]

    # ----- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._api)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/{tail:.*}", self._cdn)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"{self.url.replace('http://', 'ws://')}/gateway"

    def file(self, attachment: JSON) -> bytes:
        """The bytes behind an attachment (one a user sent or one the bot uploaded)."""
        return self.cdn[attachment["url"].split("/cdn/", 1)[1]][0]

    def host(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` at `/cdn/<path>`; return its URL (for links in messages)."""
        self.cdn[path] = (data, content_type)
        return f"{self.url}/cdn/{path}"

    # ----- waiting ---------------------------------------------------------------
    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, probe: Callable[[], T | None], timeout: float = 20.0) -> T:  # noqa: ASYNC109
        """Wait until `probe()` returns something truthy and return it."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                value = probe()
                if value:
                    return value
                await changed.wait()

    def find(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def channel_messages(self, channel_id: int, *, from_bot: bool = True) -> list[JSON]:
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)
                and not m.get("_deleted") and (m["author"]["id"] == str(BOT_ID)) == from_bot]

    def replies_to(self, message_id: int | str) -> list[JSON]:
        return [m for m in self.messages.values() if not m.get("_deleted")
                and str((m.get("message_reference") or {}).get("message_id")) == str(message_id)]

    # ----- the gateway ------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws, self._ws_seq = ws, 0
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45_000},
                                      "s": None, "t": None}))
        async for msg in ws:
            frame = json.loads(msg.data)
            if frame["op"] == 1:
                await ws.send_str(json.dumps({"op": 11, "d": None}))
            elif frame["op"] == 2:
                self.identified.append(frame["d"])
                if self.identify_close_code is not None:
                    self._touch()
                    await ws.close(code=self.identify_close_code)
                    break
                await self.dispatch("READY", {
                    "v": 10, "user": user(BOT_ID), "session_id": "fake-session",
                    "resume_gateway_url": self.gateway_url, "shard": [0, 1],
                    "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
                    "application": {"id": str(BOT_ID), "flags": 0}})
                await self.dispatch("GUILD_CREATE", guild(self.guild_locale))
                self._touch()
        if self._ws is ws:
            self._ws = None
        return ws

    async def dispatch(self, event: str, data: JSON) -> None:
        """Send one gateway DISPATCH to the connected bot."""
        assert self._ws is not None, "no bot connected to the fake gateway"
        self._ws_seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._ws_seq, "d": data}))

    # ----- REST ---------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body: Any = None
        files: list[Part] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files.append(Part(part.name or "", part.filename or "",
                                      part.headers.get("Content-Type", ""), await part.read()))
        elif request.can_read_body:
            raw = await request.read()
            body = json.loads(raw) if raw else None
        call = Call(next(self._seq), time.monotonic(), request.method, path,
                    dict(request.query), body, files)
        self.calls.append(call)
        try:
            if path == "/users/@me" and request.method == "GET":
                return await self._me(call, request.headers.get("Authorization", ""))
            for method, pattern, handler in self._routes:
                m = pattern.fullmatch(path)
                if m and method == request.method:
                    return await handler(call, *m.groups())
            return _json({"message": "404: Not Found", "code": 0}, 404)
        finally:
            self._touch()

    async def _cdn(self, request: web.Request) -> web.Response:
        tail = request.match_info["tail"]
        self.calls.append(Call(next(self._seq), time.monotonic(), "GET", f"/cdn/{tail}",
                               dict(request.query), None, []))
        self._touch()
        if tail not in self.cdn:
            return web.Response(status=404)
        data, ctype = self.cdn[tail]
        return web.Response(body=data, headers={"Content-Type": ctype})

    async def _no_content(self, call: Call, *_: str) -> web.Response:
        return web.Response(status=204)

    async def _me(self, call: Call, authorization: str = "") -> web.Response:
        if self.bot_token is not None and authorization != f"Bot {self.bot_token}":
            return _json({"message": "401: Unauthorized", "code": 0}, 401)
        return _json(user(BOT_ID))

    async def _application(self, call: Call) -> web.Response:
        return _json(application())

    async def _open_dm(self, call: Call) -> web.Response:
        uid = int(call.json["recipient_id"])
        return _json({"id": str(self.dm_channel(uid)), "type": 1, "recipients": [user(uid)],
                      "last_message_id": None})

    async def _commands(self, call: Call) -> web.Response:
        return _json([{"description": "", **c, "id": str(next(self._ids)),
                       "application_id": str(BOT_ID),
                       "version": "1", "default_member_permissions": None}
                      for c in call.json])

    def _stored(self, channel_id: str, body: JSON, files: list[Part], **extra: Any) -> JSON:
        msg = self._message(int(channel_id), BOT_ID, body.get("content") or "",
                            flags=body.get("flags", 0), embeds=body.get("embeds", []),
                            components=body.get("components", []), **extra)
        self._apply(msg, body, files)
        self.messages[int(msg["id"])] = msg
        return msg

    def _apply(self, msg: JSON, body: JSON, files: list[Part]) -> None:
        """Apply a create/edit body (and its uploads) to a stored message."""
        for key in ("content", "components", "embeds", "flags", "message_reference"):
            if key in body:
                msg[key] = body[key]
        if "attachments" in body:
            kept = {a["id"]: a for a in msg.get("attachments", [])}
            new: list[JSON] = []
            for a in body["attachments"]:
                if str(a["id"]) in kept:
                    new.append(kept[str(a["id"])])
                    continue
                part = files[int(a["id"])]
                ext = a["filename"].rsplit(".", 1)[-1]
                ctype = CONTENT_TYPES.get(ext, "application/octet-stream")
                att = self._attachment(Upload(a["filename"], part.data, ctype))
                att.update({k: v for k, v in a.items() if k != "id"})
                new.append(att)
            msg["attachments"] = new
        msg["_edits"] = msg.get("_edits", -1) + 1

    def _forbidden(self) -> web.Response:
        return _json({"message": "Missing Permissions", "code": 50013}, 403)

    def _voice_refused(self, cid: str, body: JSON) -> web.Response | None:
        if int(cid) in self.no_voice_channels and body.get("flags", 0) & VOICE:
            return _json({"message": "Cannot send voice messages in this channel",
                          "code": 50173}, 403)
        return None

    async def _create_message(self, call: Call, cid: str) -> web.Response:
        if int(cid) in self.forbidden_channels:
            return self._forbidden()
        if refused := self._voice_refused(cid, call.json):
            return refused
        msg = self._stored(cid, call.json, call.files)
        if self._ws is not None:  # like Discord, the bot hears its own posts on the gateway
            event = {k: v for k, v in msg.items() if not k.startswith("_")}
            if int(cid) not in self.dm_channels.values():
                event["guild_id"] = str(GUILD_ID)
            await self.dispatch("MESSAGE_CREATE", event)
        return _json(msg)

    async def _edit_message(self, call: Call, cid: str, mid: str) -> web.Response:
        if int(cid) in self.forbidden_channels:
            return self._forbidden()
        msg = self.messages.get(int(mid))
        if msg is None:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        self._apply(msg, call.json, call.files)
        return _json(msg)

    async def _delete_message(self, call: Call, cid: str, mid: str) -> web.Response:
        if int(mid) in self.messages:
            self.messages[int(mid)]["_deleted"] = True
        return web.Response(status=204)

    async def _get_message(self, call: Call, cid: str, mid: str) -> web.Response:
        msg = self.messages.get(int(mid))
        return _json(msg) if msg else _json({"message": "Unknown Message", "code": 10008}, 404)

    async def _history(self, call: Call, cid: str) -> web.Response:
        """A channel's messages, as Discord pages them: `after` gives the oldest ones after
        it, newest first; otherwise the newest (before `before`), newest first."""
        limit = int(call.query.get("limit", 50))
        found = sorted((m for m in self.messages.values()
                        if m["channel_id"] == cid and not m.get("_deleted")),
                       key=lambda m: int(m["id"]))
        if "after" in call.query:
            after = int(call.query["after"])
            page = [m for m in found if int(m["id"]) > after][:limit]
        else:
            before = int(call.query.get("before", 1 << 63))
            page = [m for m in found if int(m["id"]) < before][-limit:]
        return _json([{k: v for k, v in m.items() if not k.startswith("_")}
                      for m in reversed(page)])

    async def _get_channel(self, call: Call, cid: str) -> web.Response:
        for uid, dm in self.dm_channels.items():
            if dm == int(cid):
                return _json({"id": cid, "type": 1, "recipients": [user(uid)],
                              "last_message_id": None})
        return _json({"message": "Unknown Channel", "code": 10003}, 404)

    async def _callback(self, call: Call, iid: str, token: str) -> web.Response:
        it = self.interactions[token]
        it.callbacks.append(call)
        kind, data = call.json["type"], call.json.get("data") or {}
        cid = it.payload["channel_id"]
        info: JSON = {"id": iid, "type": it.payload["type"],
                      "response_message_loading": kind == 5,
                      "response_message_ephemeral": bool(data.get("flags", 0) & EPHEMERAL)}
        resource: JSON = {"type": kind}
        if kind in (4, 5):
            flags = data.get("flags", 0) | (LOADING if kind == 5 else 0)
            it.original = self._stored(cid, {**data, "flags": flags}, call.files,
                                       _interaction=it.id)
            info["response_message_id"] = it.original["id"]
            resource["message"] = it.original
        elif kind == 7 and "message" in it.payload:
            msg = self.messages[int(it.payload["message"]["id"])]
            self._apply(msg, data, call.files)
            resource["message"] = msg
        return _json({"interaction": info, "resource": resource})

    def _expired(self) -> web.Response:
        return _json({"message": "Invalid Webhook Token", "code": 50027}, 401)

    async def _followup(self, call: Call, app: str, token: str) -> web.Response:
        if token in self.expired_tokens:
            return self._expired()
        it = self.interactions[token]
        if refused := self._voice_refused(it.payload["channel_id"], call.json):
            return refused
        msg = self._stored(it.payload["channel_id"], call.json, call.files, _interaction=it.id)
        it.followups.append(msg)
        return _json(msg)

    def _hook_message(self, token: str, mid: str) -> JSON | None:
        it = self.interactions.get(token)
        if it is None:
            return None
        if mid == "@original":
            return it.original
        return self.messages.get(int(mid))

    async def _edit_hook(self, call: Call, app: str, token: str, mid: str) -> web.Response:
        if token in self.expired_tokens:
            return self._expired()
        msg = self._hook_message(token, mid)
        if msg is None:
            return _json({"message": "Unknown Message", "code": 10008}, 404)
        msg["flags"] = msg.get("flags", 0) & ~LOADING
        self._apply(msg, call.json, call.files)
        return _json(msg)

    async def _get_hook(self, call: Call, app: str, token: str, mid: str) -> web.Response:
        msg = self._hook_message(token, mid)
        return _json(msg) if msg else _json({"message": "Unknown Message", "code": 10008}, 404)

    async def _delete_hook(self, call: Call, app: str, token: str, mid: str) -> web.Response:
        msg = self._hook_message(token, mid)
        if msg is not None:
            msg["_deleted"] = True
        return web.Response(status=204)


