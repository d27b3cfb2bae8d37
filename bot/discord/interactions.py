"""Interaction handlers: `/sonify`, the message command, `/stats`, the buttons and the form.

Each handler answers (or defers) before any slow work, since Discord allows 3 s.
Refusals go through `report`, the single error path, which also logs them.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import discord

from bot.common.answers import video_to_retake
from bot.common.options import options_of, retakes_words
from bot.common.requests import Requester, refuse
from bot.discord.replies import InteractionDestination, as_user_error, clip, error_text
from bot.discord.requests import PLATFORM, DiscordRequests
from bot.discord.settings import SettingsHandlers
from bot.discord.views import PROMPT_ID, submitted_words, words_modal
from core.errors import BadRequest, GenerationFailed, ImageRejected
from core.i18n import pick_language, t
from core.intake.decode import DecodedImage
from core.options import GenerationOptions, check_seed
from core.records import RequestRecord, SourceKind

logger = logging.getLogger(__name__)


def lang_of(interaction: discord.Interaction) -> str:
    return pick_language(interaction.locale.value)


class InteractionHandlers:
    """What the bot does for each kind of interaction (the request path: `DiscordRequests`)."""

    def __init__(self, requests: DiscordRequests) -> None:
        self.requests = requests
        self.services = requests.services
        self.config = requests.config
        self.panel = SettingsHandlers(requests)

    async def settings(self, interaction: discord.Interaction) -> None:
        """`/settings`: the server's settings panel (server and bot admins)."""
        await self.panel.command(interaction)

    def _requester_of(self, interaction: discord.Interaction, lang: str) -> Requester:
        perms = interaction.permissions if interaction.guild_id else None
        # The interaction says what may be posted in its answer (attachment_size_limit).
        limit: int | None = getattr(interaction, "filesize_limit", None)
        return self.requests.requester(interaction.user, interaction.channel_id, lang, perms,
                                       interaction.guild_id, limit)

    async def report(self, interaction: discord.Interaction, error: BaseException) -> None:
        """The one error path for interactions (also the command tree's `on_error`)."""
        lang = interaction.extras.get("sonify_lang") or lang_of(interaction)
        kind = interaction.extras.get("sonify_kind")
        if kind is not None and not interaction.extras.get("sonify_logged"):
            await refuse(self.services.engine, self._requester_of(interaction, lang), kind,
                         as_user_error(error) or GenerationFailed("internal"))
        try:
            await InteractionDestination(interaction, lang).error(error_text(error, lang))
        except discord.HTTPException as exc:
            logger.warning("could not report an error to a Discord user: %s", exc)

    def _begin(self, interaction: discord.Interaction, kind: str) -> str:
        """Note what this interaction asks for, so `report` can log a refusal of it."""
        lang = lang_of(interaction)
        interaction.extras.update(sonify_kind=kind, sonify_lang=lang)
        return lang

    async def sonify_command(self, interaction: discord.Interaction, *,
                             image: discord.Attachment | None, url: str | None,
                             seconds: float | None, seed: int | None) -> None:
        """`/sonify image:… | url:… [seconds] [seed]`."""
        url = (url or "").strip()
        lang = self._begin(interaction, "attachment" if image is not None else "url")
        if image is None and not url:
            raise BadRequest("no image or link given", code="no_image_option")
        options = self.requests.options(interaction.guild_id, seconds)
        if seed is not None:
            check_seed(seed)
        if image is not None:
            self.requests.check_size(image)  # refused at once, before any download
        await self._take(interaction, lang, options=options, seed=seed,
                         source=self.requests.source_of(image if image is not None else url))

    async def sonify_message(self, interaction: discord.Interaction,
                             message: discord.Message) -> None:
        """The "Sonify this image" message command: the first image in that message."""
        sources = self.requests.sources(message, addressed=True)
        kind = SourceKind.URL if sources and isinstance(sources[0], str) else SourceKind.ATTACHMENT
        lang = self._begin(interaction, kind)
        if not sources:
            raise ImageRejected("no image in the message", code="no_image")
        if isinstance(sources[0], discord.Attachment):
            self.requests.check_size(sources[0])
        options = self.requests.options(interaction.guild_id)
        await self._take(interaction, lang, options=options, seed=None,
                         source=self.requests.source_of(sources[0]))

    async def _take(self, interaction: discord.Interaction, lang: str, *,
                    options: GenerationOptions, seed: int | None,
                    source: dict[str, Any] | None = None, caption: str | None = None,
                    prompt: str | None = None, image: DecodedImage | None = None) -> None:
        """Record the request, then answer it in the background (deferred at once)."""
        requester = self._requester_of(interaction, lang)
        if not (requester.is_admin or self.requests.enabled(interaction.guild_id)):
            raise BadRequest("switched off in this server", code="sonify_off")
        request = requester.job(
            source_kind=interaction.extras["sonify_kind"], options=options, source=source,
            caption=caption, prompt=prompt, seed=seed, image=image,
            dedupe_key=f"{PLATFORM}:interaction:{interaction.id}",
            # No interaction token here: it is a credential and rows outlive it. A job
            # re-run after a crash is answered in the channel, mentioning the user.
            reply_context={"kind": "interaction", "channel_id": str(interaction.channel_id),
                           "user_id": str(interaction.user.id),
                           "guild_id": str(interaction.guild_id or "") or None})
        # From here on the engine logs every refusal itself; `report` must not log it again.
        interaction.extras["sonify_logged"] = True
        await self.requests.take(request, InteractionDestination(interaction, lang))

    async def stats(self, interaction: discord.Interaction) -> None:
        """`/stats`: text and chart, privately: everything for the config's admins, their
        own server's requests for members with Manage Server."""
        lang = lang_of(interaction)
        guild = interaction.guild
        everything = interaction.user.id in self.config.discord.admins
        server_admin = guild is not None and interaction.permissions.manage_guild
        if not (everything or server_admin):
            await interaction.response.send_message(t("stats_denied", lang), ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        if everything or guild is None:
            text, png = await self.services.stats_report(lang)
        else:  # a server's requests are those of its channels and their threads
            channels = [str(c.id) for c in (*guild.channels, *guild.threads)]
            text, png = await self.services.stats_report(lang, chats=(PLATFORM, channels),
                                                         place=guild.name)
        await interaction.edit_original_response(
            content=clip(text),
            attachments=[discord.File(io.BytesIO(png), filename="sonify-stats.png")])

    # ----- buttons and the form -----------------------------------------------------------
    async def _own_record(self, interaction: discord.Interaction, request_id: str,
                          lang: str) -> RequestRecord | None:
        """The request behind a button, if it exists and belongs to whoever pressed it."""
        record = await self.services.engine.get_request(request_id)
        refusal = None
        if record is None or not (record.caption or record.prompt):
            refusal = "expired"
        elif record.platform != PLATFORM or record.user_id != str(interaction.user.id):
            refusal = "not_yours"
        if refusal is None:
            return record
        await interaction.response.send_message(t(refusal, lang), ephemeral=True)
        await refuse(self.services.engine, self._requester_of(interaction, lang),
                     interaction.extras["sonify_kind"], BadRequest(refusal, code=refusal))
        return None

    async def again(self, interaction: discord.Interaction, request_id: str) -> None:
        """"Another take": the stored caption (or prompt), a fresh seed."""
        try:
            lang = self._begin(interaction, "retake")
            record = await self._own_record(interaction, request_id, lang)
            if record is None:
                return
            words = retakes_words(record)
            options = options_of(record, self.config.generation)
            video = await video_to_retake(self.services.engine, record, self.config)
            await self._take(interaction, lang, options=options, seed=None, image=video,
                             caption=None if words else record.caption,
                             prompt=record.prompt if words else None)
        except Exception as exc:
            await self.report(interaction, exc)

    async def ask_words(self, interaction: discord.Interaction, request_id: str) -> None:
        """"Use my words": open the form (only for the requester)."""
        try:
            lang = self._begin(interaction, "text")
            if await self._own_record(interaction, request_id, lang) is None:
                return
            modal = words_modal(request_id, lang)
            await interaction.response.send_modal(modal)
            # Submissions are handled in on_modal by custom id, so a form opened before a
            # restart works after it too; the library's per-process copy is not needed.
            modal.stop()
        except Exception as exc:
            await self.report(interaction, exc)

    async def on_modal(self, interaction: discord.Interaction) -> None:
        """A submitted "Use my words" form: the text becomes the prompt."""
        data: dict[str, Any] = dict(interaction.data or {})
        match = PROMPT_ID.fullmatch(str(data.get("custom_id", "")))
        if match is None:
            return
        try:
            lang = self._begin(interaction, "text")
            record = await self._own_record(interaction, match["rid"], lang)
            if record is None:
                return
            words = submitted_words(dict(interaction.data or {}))
            if not words:
                raise BadRequest("empty description")
            options = options_of(record, self.config.generation)
            video = await video_to_retake(self.services.engine, record, self.config)
            await self._take(interaction, lang, options=options, seed=None, prompt=words,
                             image=video)
        except Exception as exc:
            await self.report(interaction, exc)
