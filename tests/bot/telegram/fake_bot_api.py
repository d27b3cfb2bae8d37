"""A fake Telegram Bot API server on loopback, for driving the real python-telegram-bot.

Wire format (see DESIGN.md): every call is ``POST {base}/bot{token}/{method}`` with a
form-encoded or multipart body (objects such as ``reply_markup`` arrive as JSON
strings); replies are ``{"ok": true, "result": ...}``. ``getUpdates`` long-polls a
queue the test pushes updates into; ``getFile`` hands out ``file_path`` values that
PTB downloads from ``{base}/file/bot{token}/{file_path}``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_ID = 777000111
BOT_USERNAME = "sonify_test_bot"
BOT_USER = {"id": BOT_ID, "is_bot": True, "first_name": "Sonify", "username": BOT_USERNAME}

# Parameters PTB sends as JSON strings inside form bodies.
_JSON_FIELDS = {"reply_markup", "reply_parameters", "commands", "allowed_updates", "scope",
                "entities", "caption_entities", "link_preview_options"}
# Methods answered with a message object.
_MESSAGE_METHODS = {"sendMessage", "sendVoice", "sendAudio", "sendPhoto", "sendDocument",
                    "sendVideo"}


@dataclass
class Call:
    """One Bot API call the fake received."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    filenames: dict[str, str] = field(default_factory=dict)
    result: Any = None
    at: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")

    @property
    def reply_to(self) -> int | None:
        """The message id this call replies to (reply_parameters or legacy field)."""
        rp = self.params.get("reply_parameters")
        if isinstance(rp, dict):
            return int(rp["message_id"])
        if "reply_to_message_id" in self.params:
            return int(self.params["reply_to_message_id"])
        return None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        markup = self.params.get("reply_markup")
        if not isinstance(markup, dict):
            return []
        return [b for row in markup.get("inline_keyboard", []) for b in row]


@dataclass
class _Failure:
    method: str
    status: int  # 0: drop the connection without answering
    description: str
    retry_after: int | None
    times: int


class FakeBotAPI:
    """The fake server: start it, push updates, then inspect `calls`."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[Call] = []
        self.files: dict[str, tuple[bytes, int | None]] = {}
        self.chats: dict[int, dict[str, Any]] = {}
        self.chat_admins: dict[int, set[int]] = {}  # chat id -> its admins (getChatMember)
        self.webhook: dict[str, Any] | None = None
        self.downloads: list[str] = []
        self.images: dict[str, tuple[bytes, str]] = {}
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._changed = asyncio.Condition()
        self._failures: list[_Failure] = []
        self._closing = False
        # While set and not yet opened, file downloads wait (a slow Telegram file server).
        self.downloads_gate: asyncio.Event | None = None
        self.confirmed = 0  # the highest offset a getUpdates call confirmed
        self.last_update_id = 0  # the newest update pushed
        self.deliveries: Counter[int] = Counter()  # how often each update was handed out
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> str:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        app.router.add_get("/img/{name}", self._image)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        async with self._changed:  # release long polls still waiting
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"{self.url}/bot"

    @property
    def file_base(self) -> str:
        return f"{self.url}/file/bot"

    # -- test-side helpers -----------------------------------------------------------
    def add_file(self, data: bytes, *, size: int | None = None) -> str:
        """Store a file the bot may download; `size` overrides the reported file_size."""
        file_id = f"FILE{next(self._file_ids)}"
        self.files[file_id] = (data, size)
        return file_id

    def host_image(self, data: bytes, content_type: str = "image/png") -> str:
        """Serve `data` as an ordinary web image; returns its link."""
        name = f"pic{len(self.images) + 1}.{content_type.rsplit('/', 1)[-1]}"
        self.images[name] = (data, content_type)
        return f"{self.url}/img/{name}"

    def new_message_id(self) -> int:
        return next(self._message_ids)

    async def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is added unless it has one: Telegram
        sends an update again, same id, when its offset was never confirmed)."""
        update = {"update_id": next(self._update_ids), **update}
        self.last_update_id = max(self.last_update_id, update["update_id"])
        for key in ("message", "callback_query"):
            msg = update.get(key, {})
            chat = msg.get("chat") or msg.get("message", {}).get("chat")
            if chat:
                self.chats[chat["id"]] = chat
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()
        return update

    def fail_next(self, method: str, *, status: int = 429, retry_after: int | None = 1,
                  description: str = "Too Many Requests: retry later", times: int = 1) -> None:
        """Answer the next `times` calls of `method` with an error."""
        self._failures.append(_Failure(method, status, description, retry_after, times))

    def drop_next(self, method: str, *, times: int = 1) -> None:
        """Close the connection of the next `times` calls of `method` without answering."""
        self._failures.append(_Failure(method, 0, "", None, times))

    def calls_of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [c for c in self.calls if c.method == method
                and (chat_id is None or int(c.params.get("chat_id", 0)) == chat_id)]

    async def wait_for(self, method: str, predicate: Callable[[Call], bool] = lambda c: True,
                       *, within: float = 20.0, after: int = 0) -> Call:
        """The first call of `method` ("*": any) from index `after` matching `predicate`."""

        def find() -> Call | None:
            for c in self.calls[after:]:
                if method in ("*", c.method) and predicate(c):
                    return c
            return None

        async def wait() -> Call:
            async with self._changed:
                while (found := find()) is None:
                    await self._changed.wait()
                return found

        try:
            return await asyncio.wait_for(wait(), within)
        except TimeoutError:
            seen = [(c.method, c.text[:60]) for c in self.calls[after:]]
            raise AssertionError(f"no {method} call matched in {within} s; saw {seen}") from None

    async def wait_delivered(self, update_id: int, times: int, *, within: float = 30.0) -> None:
        """Wait until `update_id` has been handed to the bot `times` times (Telegram delivers
        an update again until an offset past it confirms it)."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(
                lambda: self.deliveries[update_id] >= times), within)

    async def wait_confirmed(self, update_id: int, *, within: float = 20.0) -> None:
        """Wait until the bot confirms `update_id` (asks for an offset past it): it does so
        only once its handler has run to the end for that update."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.confirmed > update_id)

        try:
            await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise AssertionError(f"update {update_id} was not confirmed in {within} s "
                                 f"(confirmed below {self.confirmed})") from None

    # -- HTTP handlers -----------------------------------------------------------------
    async def _params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes],
                                                          dict[str, str]]:
        params: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        names: dict[str, str] = {}
        if request.content_type == "application/json":
            params = await request.json()
        elif request.can_read_body:
            form = await request.post()
            for key, value in form.items():
                if isinstance(value, web.FileField):
                    files[key] = value.file.read()
                    names[key] = value.filename
                else:
                    params[key] = value
        params.update(request.query)
        for key in list(params):
            if key in _JSON_FIELDS and isinstance(params[key], str):
                params[key] = json.loads(params[key])
        return params, files, names

    async def _api(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401,
                                      "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        params, files, names = await self._params(request)
        failure = self._take_failure(method)
        if failure is not None and failure.status == 0:
            # The request was read in full; the answer never comes (a dropped connection).
            await self._record(Call(method, params, files, names, result={"error_code": 0}))
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if method == "getUpdates" and failure is None:  # polls are not recorded as calls
            return web.json_response({"ok": True, "result": await self._get_updates(params)})
        call = Call(method, params, files, names)
        if failure is not None:
            call.result = {"error_code": failure.status}
            await self._record(call)
            body: dict[str, Any] = {"ok": False, "error_code": failure.status,
                                    "description": failure.description}
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            return web.json_response(body, status=failure.status)
        try:
            result = self._answer(call)
        except LookupError as exc:
            await self._record(call)
            return web.json_response({"ok": False, "error_code": 400,
                                      "description": f"Bad Request: {exc}"}, status=400)
        call.result = result
        await self._record(call)
        return web.json_response({"ok": True, "result": result})

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        path = request.match_info["path"]
        self.downloads.append(path)
        if self.downloads_gate is not None:
            await self.downloads_gate.wait()
        file_id = path.rsplit("/", 1)[-1]
        if file_id not in self.files:
            return web.Response(status=404)
        return web.Response(body=self.files[file_id][0])

    async def _image(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.images:
            return web.Response(status=404)
        data, content_type = self.images[name]
        return web.Response(body=data, content_type=content_type)

    async def _record(self, call: Call) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def _take_failure(self, method: str) -> _Failure | None:
        for failure in self._failures:
            if failure.method == method and failure.times > 0:
                failure.times -= 1
                return failure
        return None

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        if offset > self.confirmed:
            async with self._changed:  # wakes `wait_confirmed`
                self.confirmed = offset
                self._changed.notify_all()
        self._updates = [u for u in self._updates if u["update_id"] >= offset]

        async def wait() -> None:
            async with self._changed:
                while not self._updates and not self._closing:
                    await self._changed.wait()

        if not self._updates and timeout > 0:
            try:
                await asyncio.wait_for(wait(), timeout)
            except TimeoutError:
                pass
        async with self._changed:  # wakes `wait_delivered`
            self.deliveries.update(u["update_id"] for u in self._updates)
            self._changed.notify_all()
        return list(self._updates)

    def _chat(self, chat_id: Any) -> dict[str, Any]:
        cid = int(chat_id)
        return self.chats.get(cid, {"id": cid, "type": "private" if cid > 0 else "group",
                                    "title": "chat"})

    def _message(self, params: dict[str, Any], **content: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"message_id": self.new_message_id(), "date": int(time.time()),
                               "chat": self._chat(params["chat_id"]), "from": BOT_USER, **content}
        if isinstance(params.get("reply_markup"), dict) and "inline_keyboard" in \
                params["reply_markup"]:
            msg["reply_markup"] = params["reply_markup"]
        return msg

    def _answer(self, call: Call) -> Any:
        m, p = call.method, call.params
        if m == "getMe":
            return {**BOT_USER, "can_join_groups": True, "can_read_all_group_messages": False,
                    "supports_inline_queries": False}
        if m == "setWebhook":
            self.webhook = p
            return True
        if m in ("deleteWebhook", "setMyCommands", "sendChatAction", "answerCallbackQuery",
                 "deleteMessage"):
            return True
        if m == "getFile":
            file_id = str(p["file_id"])
            if file_id not in self.files:
                raise LookupError("wrong file_id specified")
            data, size = self.files[file_id]
            return {"file_id": file_id, "file_unique_id": f"u{file_id}",
                    "file_size": len(data) if size is None else size,
                    "file_path": f"documents/{file_id}"}
        if m == "editMessageText":
            edited = {"message_id": int(p["message_id"]), "date": int(time.time()),
                      "chat": self._chat(p["chat_id"]), "from": BOT_USER, "text": p["text"],
                      "edit_date": int(time.time())}
            if isinstance(p.get("reply_markup"), dict):
                edited["reply_markup"] = p["reply_markup"]
            return edited
        if m == "getChatMember":
            uid = int(p["user_id"])
            status = "administrator" if uid in self.chat_admins.get(int(p["chat_id"]), set()) \
                else "member"
            member: dict[str, Any] = {"status": status, "user": {
                "id": uid, "is_bot": False, "first_name": f"user{uid}"}}
            if status == "administrator":
                member.update(can_be_edited=False, is_anonymous=False, can_manage_chat=True,
                              can_delete_messages=True, can_manage_video_chats=True,
                              can_restrict_members=True, can_promote_members=False,
                              can_change_info=True, can_invite_users=True,
                              can_post_stories=False, can_edit_stories=False,
                              can_delete_stories=False)
            return member
        if m in _MESSAGE_METHODS:
            content: dict[str, Any] = {}
            if "text" in p:
                content["text"] = p["text"]
            if "caption" in p:
                content["caption"] = p["caption"]
            kind = {"sendVoice": "voice", "sendAudio": "audio", "sendDocument": "document",
                    "sendVideo": "video"}
            if m in kind:
                name = kind[m]
                content[name] = {"file_id": f"up{len(self.calls)}", "file_unique_id": "x",
                                 "duration": int(p.get("duration", 0) or 0),
                                 "file_size": len(call.files.get(name, b""))}
                if name == "video":
                    content[name].update(width=int(p.get("width", 0) or 0),
                                         height=int(p.get("height", 0) or 0))
            if m == "sendPhoto":
                content["photo"] = [{"file_id": f"up{len(self.calls)}", "file_unique_id": "y",
                                     "width": 100, "height": 100}]
            return self._message(p, **content)
        raise LookupError(f"method {m} is not supported by the fake")
