"""What users do on the fake Discord: post messages, run commands, press buttons, fill forms.

A mixin of `FakeDiscord`: each action builds the payload Discord would send and
dispatches it over the fake gateway to the connected bot.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import discord

from tests.bot.discord.fake_payloads import (
    ALICE,
    BOT_ID,
    GUILD_ID,
    JSON,
    MEMBER_PERMS,
    WATCHED,
    Interaction,
    Upload,
    member,
    member_permissions,
    message,
    user,
)


class FakeUsers:
    """The user side of the fake: everything a test makes people do."""

    url: str
    cdn: dict[str, tuple[bytes, str]]
    messages: dict[int, JSON]
    interactions: dict[str, Interaction]
    dm_channels: dict[int, int]
    guild_locale: str
    _ids: Iterator[int]

    async def dispatch(self, event: str, data: JSON) -> None:
        raise NotImplementedError

    def _attachment(self, up: Upload) -> JSON:
        aid = next(self._ids)
        path = f"attachments/{aid}/{up.filename}"
        self.cdn[path] = (up.data, up.content_type or "application/octet-stream")
        att: JSON = {"id": str(aid), "filename": up.filename,
                     "size": up.size if up.size is not None else len(up.data),
                     "url": f"{self.url}/cdn/{path}", "proxy_url": f"{self.url}/cdn/{path}"}
        if up.content_type:
            att["content_type"] = up.content_type
        return att

    def _message(self, channel_id: int, author: int, content: str, **extra: Any) -> JSON:
        return message(next(self._ids), channel_id, author, content, **extra)

    def dm_channel(self, uid: int) -> int:
        return self.dm_channels.setdefault(uid, next(self._ids))

    async def send_message(self, channel_id: int | None, author: int = ALICE, content: str = "",
                           attachments: list[Upload] = (), *, mention_bot: bool = False,
                           embeds: list[JSON] = (), reply_to: JSON | None = None,
                           bot_online: bool = True, created: datetime | None = None) -> JSON:
        """A user posts a message (channel_id None: a DM to the bot).

        `bot_online=False`: posted while the bot is away, so only the history holds it.
        `created`: when it was posted (its id says so, as Discord's snowflakes do).

        `reply_to` makes it a reply that pings the replied-to author, as Discord's
        client does by default: that author joins `mentions`, the text stays as typed.
        """
        dm = channel_id is None
        cid = self.dm_channel(author) if dm else channel_id
        mentions = [user(BOT_ID)] if mention_bot else []
        if mention_bot:
            content = f"<@{BOT_ID}> {content}".strip()
        extra: JSON = {}
        if reply_to is not None:
            extra = {"type": 19, "referenced_message": reply_to,
                     "message_reference": {"message_id": reply_to["id"], "channel_id": str(cid),
                                           **({} if dm else {"guild_id": str(GUILD_ID)})}}
            if reply_to["author"]["id"] not in {m["id"] for m in mentions}:
                mentions.append(reply_to["author"])
        msg = self._message(cid, author, content,
                            attachments=[self._attachment(a) for a in attachments],
                            embeds=list(embeds), mentions=mentions, **extra)
        if created is not None:
            msg["id"] = str(discord.utils.time_snowflake(created))
        if not dm:
            msg["guild_id"] = str(GUILD_ID)
            msg["member"] = {k: v for k, v in member(author).items() if k != "user"}
        self.messages[int(msg["id"])] = msg
        if bot_online:
            await self.dispatch("MESSAGE_CREATE", msg)
        return msg

    async def _interact(self, kind: int, data: JSON, *, author: int, channel_id: int | None,
                        locale: str, message: JSON | None = None) -> Interaction:
        iid = next(self._ids)
        token = f"itoken-{iid}"
        dm = channel_id is None
        cid = self.dm_channel(author) if dm else channel_id
        payload: JSON = {
            "id": str(iid), "application_id": str(BOT_ID), "type": kind, "data": data,
            "token": token, "version": 1, "locale": locale, "app_permissions": str(MEMBER_PERMS),
            "attachment_size_limit": 10_485_760, "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)} if not dm else {},
            "context": 1 if dm else 0,
            "channel_id": str(cid),
            "channel": ({"id": str(cid), "type": 1, "recipients": [user(author)]} if dm else
                        {"id": str(cid), "type": 0, "guild_id": str(GUILD_ID),
                         "name": "pictures", "position": 0, "permission_overwrites": []}),
        }
        if dm:
            payload["user"] = user(author)
        else:
            perms = member_permissions(author)
            payload.update(guild_id=str(GUILD_ID), guild_locale=self.guild_locale,
                           member={**member(author), "permissions": str(perms)})
        if message is not None:
            payload["message"] = message
        it = Interaction(iid, token, payload)
        self.interactions[token] = it
        await self.dispatch("INTERACTION_CREATE", payload)
        return it

    async def slash(self, name: str, options: dict[str, Any] | None = None, *,
                    upload: Upload | None = None, author: int = ALICE,
                    channel_id: int | None = WATCHED, locale: str = "en-US") -> Interaction:
        """A user runs a slash command; `upload` becomes the `image` attachment option."""
        opts = [{"name": k, "type": {str: 3, int: 4, float: 10}[type(v)], "value": v}
                for k, v in (options or {}).items()]
        data: JSON = {"id": str(next(self._ids)), "name": name, "type": 1, "options": opts}
        if upload is not None:
            att = self._attachment(upload)
            opts.append({"name": "image", "type": 11, "value": att["id"]})
            data["resolved"] = {"attachments": {att["id"]: att}}
        return await self._interact(2, data, author=author, channel_id=channel_id, locale=locale)

    async def context_menu(self, name: str, target: JSON, *, author: int = ALICE,
                           locale: str = "en-US") -> Interaction:
        """A user runs a message command on `target`."""
        data = {"id": str(next(self._ids)), "name": name, "type": 3, "target_id": target["id"],
                "resolved": {"messages": {target["id"]: target}}}
        cid = None if "guild_id" not in target else int(target["channel_id"])
        return await self._interact(2, data, author=author, channel_id=cid, locale=locale)

    async def click(self, message: JSON, custom_id: str, *, author: int = ALICE,
                    locale: str = "en-US") -> Interaction:
        """A user presses a button under `message`."""
        cid = None if int(message["channel_id"]) in self.dm_channels.values() \
            else int(message["channel_id"])
        return await self._interact(3, {"custom_id": custom_id, "component_type": 2},
                                    author=author, channel_id=cid, locale=locale,
                                    message=message)

    async def choose(self, message: JSON, custom_id: str, values: list[str], *,
                     author: int = ALICE, locale: str = "en-US",
                     component_type: int = 3) -> Interaction:
        """A user picks `values` in a select menu under `message` (type 8: a channel select)."""
        cid = None if int(message["channel_id"]) in self.dm_channels.values() \
            else int(message["channel_id"])
        data: JSON = {"custom_id": custom_id, "component_type": component_type,
                      "values": values}
        if component_type == 8:
            data["resolved"] = {"channels": {v: {"id": v, "type": 0, "name": f"channel-{v}",
                                                 "permissions": "0"} for v in values}}
        return await self._interact(3, data, author=author, channel_id=cid, locale=locale,
                                    message=message)

    async def submit_modal(self, modal: JSON, values: list[str], *, author: int = ALICE,
                           channel_id: int | None = WATCHED,
                           locale: str = "en-US") -> Interaction:
        """A user fills the text inputs of `modal` (a type-9 callback's data) and submits."""
        inputs = [c for row in modal["components"] for c in row["components"]]
        rows = [{"type": 1, "components": [{"type": 4, "custom_id": c["custom_id"], "value": v}]}
                for c, v in zip(inputs, values, strict=True)]
        return await self._interact(5, {"custom_id": modal["custom_id"], "components": rows},
                                    author=author, channel_id=channel_id, locale=locale)
