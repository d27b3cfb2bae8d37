"""Where a Discord job's status and answer go: a reply to a message, or an interaction response.

A `Destination` shows short status texts (first call posts, later calls edit), then either
the finished clip or an error. `follow` drives a target from a job's event stream,
throttling progress edits. `error_text` is the one place exceptions become user text.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import discord
import numpy as np
import soundfile as sf
from discord import app_commands
from discord.http import Route, handle_message_parameters

from core.errors import StorageUnavailable, UserFacingError, try_again_soon
from core.i18n import describe_error
from core.jobs.events import JobEvent, JobResult

logger = logging.getLogger(__name__)
CONTENT_LIMIT = 2000


def as_user_error(exc: BaseException) -> UserFacingError | None:
    """The user-facing meaning of `exc`, or None when it is a bug (or a Discord outage)."""
    if isinstance(exc, app_commands.CommandInvokeError | app_commands.TransformerError):
        exc = getattr(exc, "original", None) or exc.__cause__ or exc
    if isinstance(exc, UserFacingError):
        return exc
    if isinstance(exc, StorageUnavailable):  # not recorded, so not taken: try again soon
        return try_again_soon()
    if isinstance(exc, discord.Forbidden):
        return UserFacingError("missing permissions", code="missing_permissions")
    return None


def error_text(exc: BaseException, lang: str) -> str:
    """The text a user sees for `exc` (never a traceback; unknown errors are logged)."""
    err = as_user_error(exc)
    if err is None:
        logger.error("unexpected error while handling a Discord request", exc_info=exc)
        return describe_error(exc, lang)
    return describe_error(err, lang)


def clip(text: str) -> str:
    return text if len(text) <= CONTENT_LIMIT else text[: CONTENT_LIMIT - 1] + "…"


@dataclass
class Answer:
    """A finished clip as the user will get it."""

    result: JobResult
    text: str
    view: discord.ui.View | None
    fmt: str  # "ogg" | "mp3"
    voice: bool

    def file(self) -> discord.File:
        path = self.result.files[self.fmt]
        return discord.File(path, filename=f"sonify-{self.result.request_id}.{self.fmt}")

    async def voice_file(self) -> VoiceFile:
        path = self.result.files["ogg"]
        waveform = await asyncio.to_thread(waveform_of, path)
        return VoiceFile(path, waveform, self.result.duration_s)


class VoiceFile(discord.File):
    """An OGG/Opus upload with the extra attachment fields a voice message needs."""

    def __init__(self, path: Path, waveform: str, duration: float) -> None:
        super().__init__(path, filename="voice-message.ogg")
        self.waveform, self.duration = waveform, duration

    def to_dict(self, index: int) -> dict[str, Any]:
        data = super().to_dict(index)
        data.update(waveform=self.waveform, duration_secs=round(self.duration, 2))
        return data


def waveform_of(path: Path, max_points: int = 256) -> str:
    """Base64 loudness bytes (0-255) for a voice message: one per 100 ms, at most 256."""
    # That is how Discord's own clients sample recordings, so the drawn shape matches theirs.
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    mono = np.abs(audio.mean(axis=1))
    if mono.size == 0:
        return base64.b64encode(b"\0").decode()
    points = max(1, min(max_points, round(10 * mono.size / rate), mono.size))
    chunks = np.array_split(mono, points)
    levels = np.array([float(c.max()) for c in chunks])
    peak = float(levels.max()) or 1.0
    return base64.b64encode(bytes(round(255 * v / peak) for v in levels)).decode()


async def send_voice(http: discord.http.HTTPClient, file: VoiceFile, *,
                     channel_id: int | None = None, webhook: tuple[int, str] | None = None,
                     reference: Mapping[str, object] | None = None) -> None:
    """Post a voice message (flag IS_VOICE_MESSAGE; no text allowed) to a channel or webhook."""
    # discord.py sends message_reference as the JSON dict its own Messageable.send builds
    # (its parameter's annotation names the object instead).
    reference_field: Any = reference or discord.utils.MISSING
    params = handle_message_parameters(file=file, flags=discord.MessageFlags(voice=True),
                                       message_reference=reference_field)
    try:
        if channel_id is not None:
            await http.send_message(channel_id, params=params)
        elif webhook is not None:
            route = Route("POST", "/webhooks/{webhook_id}/{webhook_token}",
                          webhook_id=webhook[0], webhook_token=webhook[1])
            await http.request(route, form=params.multipart, files=params.files,
                               params={"wait": "true"})
    finally:
        file.close()


class Undeliverable(Exception):
    """Nowhere left to post (no permission in the channel, DMs closed)."""


class Destination:
    """Somewhere to show a job's status and answer."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.guild_id: int | None = None  # the server, whose settings shape the answer

    async def show(self, text: str) -> None:
        raise NotImplementedError

    async def finish(self, answer: Answer) -> None:
        raise NotImplementedError

    async def error(self, text: str) -> None:
        raise NotImplementedError

    async def announce(self, text: str) -> dict[str, Any]:
        """The first status line; returns what a restart needs to find it again."""
        await self.show(text)
        return {}


class MessageDestination(Destination):
    """Replies to a posted message; falls back to a DM when the channel forbids posting."""

    def __init__(self, client: discord.Client, lang: str, *, channel_id: int,
                 message_id: int | None, author_id: int, guild_id: int | None = None,
                 status_message_id: int | None = None) -> None:
        super().__init__(lang)
        self.client, self.author_id = client, author_id
        self.guild_id = guild_id
        self.channel: discord.PartialMessageable | discord.DMChannel = \
            client.get_partial_messageable(channel_id, guild_id=guild_id)
        self.reference: discord.MessageReference | None = None
        if message_id is not None:
            self.reference = discord.MessageReference(
                message_id=message_id, channel_id=channel_id, guild_id=guild_id,
                fail_if_not_exists=False)
        # The status message shown before a restart, if any, is edited rather than repeated.
        self.status: discord.Message | discord.PartialMessage | None = (
            self.channel.get_partial_message(status_message_id)
            if status_message_id is not None else None)
        self.in_dm = False
        self.prefix = ""  # e.g. a mention, when the answer is not a reply

    async def _send(self, **kwargs: Any) -> discord.Message:
        if "content" in kwargs:
            kwargs["content"] = clip(self.prefix + kwargs["content"])
            if self.prefix:
                # The mention stands in for the lost interaction: let it notify that user
                # (the client allows no mentions by default).
                kwargs["allowed_mentions"] = discord.AllowedMentions(
                    users=[discord.Object(self.author_id)])
        return await self._send_here(**kwargs)

    async def _send_here(self, **kwargs: Any) -> discord.Message:
        try:
            # Per attempt: after a move to DMs there is no message to reply to any more.
            call: dict[str, Any] = dict(kwargs)
            if self.reference is not None:
                call["reference"] = self.reference
            return await self.channel.send(mention_author=False, **call)
        except discord.Forbidden:
            if self.in_dm:
                raise Undeliverable("the user's DMs are closed") from None
            await self._move_to_dm()
            return await self._send_here(**kwargs)

    async def _move_to_dm(self) -> None:
        """No permission here: tell the user privately and carry on there."""
        logger.warning("missing permissions in Discord channel %s; answering by DM",
                       self.channel.id)
        self.channel = await self.client.create_dm(discord.Object(self.author_id))
        self.reference, self.status, self.in_dm, self.prefix = None, None, True, ""
        try:
            await self.channel.send(describe_error(
                UserFacingError("missing permissions", code="missing_permissions"), self.lang))
        except discord.Forbidden:
            raise Undeliverable("the user's DMs are closed") from None

    async def announce(self, text: str) -> dict[str, Any]:
        await self.show(text)
        if self.status is None or self.in_dm:
            return {}
        return {"status_message_id": str(self.status.id)}

    async def show(self, text: str) -> None:
        if self.status is None:
            self.status = await self._send(content=text)
            return
        try:
            await self.status.edit(content=clip(self.prefix + text))
        except discord.Forbidden:
            await self._move_to_dm()
            self.status = await self._send(content=text)

    async def finish(self, answer: Answer) -> None:
        if answer.voice:
            await self._send(content=clip(answer.text), view=answer.view)
            file = await answer.voice_file()
            ref = self.reference.to_message_reference_dict() if self.reference else None
            try:
                await send_voice(self.client.http, file, channel_id=self.channel.id,
                                 reference=ref)
            except discord.HTTPException as exc:
                # e.g. no "Send Voice Messages" permission here (code 50173): a plain
                # file plays everywhere, so the user still gets the clip.
                logger.warning("Discord refused a voice message (%s, code %s); sending a file",
                            exc.status, exc.code)
                await self._send_here(file=answer.file())
        else:
            await self._send(content=clip(answer.text), file=answer.file(), view=answer.view)
        await self._drop_status()

    async def error(self, text: str) -> None:
        if self.status is not None:
            try:
                await self.status.edit(content=clip(self.prefix + text))
                return
            except discord.HTTPException:
                pass
        await self._send(content=text)

    async def _drop_status(self) -> None:
        if self.status is not None:
            try:
                await self.status.delete()
            except discord.HTTPException:
                logger.debug("could not delete a status message", exc_info=True)
            self.status = None


class InteractionDestination(Destination):
    """Edits a deferred interaction's original response; errors go out ephemeral.

    Interaction tokens die after 15 minutes; a job that waited longer is answered
    in the channel instead, mentioning the user.
    """

    def __init__(self, interaction: discord.Interaction, lang: str) -> None:
        super().__init__(lang)
        self.interaction = interaction
        self.guild_id = interaction.guild_id
        self.fallback: MessageDestination | None = None

    def _expired(self, exc: discord.HTTPException) -> bool:
        if exc.status not in (401, 404) or self.interaction.channel_id is None:
            return False
        logger.info("interaction token expired; answering in the channel instead")
        self.fallback = MessageDestination(
            self.interaction.client, self.lang, channel_id=self.interaction.channel_id,
            message_id=None, author_id=self.interaction.user.id,
            guild_id=self.interaction.guild_id)
        self.fallback.prefix = f"<@{self.interaction.user.id}> "
        return True

    async def announce(self, text: str) -> dict[str, Any]:
        if not self.interaction.response.is_done():
            await self.interaction.response.defer(thinking=True)
        await self.show(text)
        return {}

    async def show(self, text: str) -> None:
        if self.fallback is not None:
            return await self.fallback.show(text)
        try:
            await self.interaction.edit_original_response(content=text)
        except discord.HTTPException as exc:
            if not self._expired(exc):
                raise
            await self.show(text)

    async def finish(self, answer: Answer) -> None:
        if self.fallback is not None:
            return await self.fallback.finish(answer)
        try:
            await self._finish(answer)
        except discord.HTTPException as exc:
            if not self._expired(exc):
                raise
            await self.finish(answer)

    async def _finish(self, answer: Answer) -> None:
        if answer.voice:
            await self.interaction.edit_original_response(content=clip(answer.text),
                                                          view=answer.view)
            file = await answer.voice_file()
            it = self.interaction
            try:
                await send_voice(it.client.http, file, webhook=(it.application_id, it.token))
            except discord.HTTPException as exc:
                if exc.status in (401, 404):
                    raise  # the token expired: `finish` answers in the channel instead
                logger.warning("Discord refused a voice message (%s, code %s); sending a file",
                            exc.status, exc.code)
                await it.edit_original_response(attachments=[answer.file()])
            return
        await self.interaction.edit_original_response(
            content=clip(answer.text), attachments=[answer.file()], view=answer.view)

    async def error(self, text: str) -> None:
        if self.fallback is not None:
            return await self.fallback.error(text)
        response = self.interaction.response
        if not response.is_done():
            await response.send_message(text, ephemeral=True)
            return
        # The deferred "thinking…" message is public; replace it with a private note.
        try:
            await self.interaction.delete_original_response()
        except discord.HTTPException:
            logger.debug("could not delete the original response", exc_info=True)
        await self.interaction.followup.send(text, ephemeral=True)


class DiscordAnswerTarget:
    """One request's status line and answer on Discord (a `bot.common` AnswerTarget)."""

    def __init__(self, target: Destination, make_answer: Callable[[JobResult], Answer]) -> None:
        self.target, self.make_answer, self.lang = target, make_answer, target.lang

    async def announce(self, text: str) -> dict[str, Any]:
        return await self.target.announce(text)

    async def on_event(self, event: JobEvent) -> None:
        return None  # Discord shows no "recording…" indicator to renew

    async def show(self, text: str) -> None:
        await self.target.show(text)

    async def deliver(self, result: JobResult) -> None:
        await self.target.finish(self.make_answer(result))

    async def apologise(self, error: BaseException) -> None:
        await self.target.error(error_text(error, self.lang))

    def gave_up(self, error: BaseException) -> bool:
        # Discord refused the post itself, or there is nowhere left to post.
        return isinstance(error, Undeliverable | discord.HTTPException)
