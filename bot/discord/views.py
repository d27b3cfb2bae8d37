"""The buttons under an answer and the "Use my words" form.

The buttons are one `DynamicItem` whose custom id carries the action and the request id
(`sonify:again:<id>`, `sonify:words:<id>`): discord.py rebuilds them from the id
alone, so they keep working after a restart; the state comes from the request log.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

from core.i18n import t
from core.user_text import WORDS_MAX_CHARS

RID = r"(?P<rid>[A-Za-z0-9_-]{1,40})"
PROMPT_PREFIX = "sonify:prompt:"
PROMPT_ID = re.compile(re.escape(PROMPT_PREFIX) + RID)


class ButtonActions(Protocol):
    """What the buttons under an answer do (implemented by the interaction handlers)."""

    async def again(self, interaction: discord.Interaction, request_id: str) -> None: ...

    async def ask_words(self, interaction: discord.Interaction, request_id: str) -> None: ...


@runtime_checkable
class RoutesButtons(Protocol):
    """A client that knows Sonify's button actions (the adapter's client)."""

    button_actions: ButtonActions


def actions_of(interaction: discord.Interaction) -> ButtonActions:
    """The button actions of the client that received this interaction."""
    client = interaction.client
    if not isinstance(client, RoutesButtons):
        raise TypeError("this Discord client does not route Sonify's buttons")
    return client.button_actions


# What each button does, and how it looks: (catalogue label key, emoji, style).
_BUTTONS = {"again": ("another_take", "🔁", discord.ButtonStyle.primary),
            "words": ("use_my_words", "✏️", discord.ButtonStyle.secondary)}


class ResultButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]],
                   template=f"sonify:(?P<action>again|words):{RID}"):
    """ "Another take" (the same caption, a new seed) or "Use my words" (a form; the user's
    text becomes the sound prompt), for one request."""

    def __init__(self, action: str, request_id: str, lang: str = "en") -> None:
        label_key, emoji, style = _BUTTONS[action]
        super().__init__(discord.ui.Button(label=t(label_key, lang), emoji=emoji, style=style,
                                           custom_id=f"sonify:{action}:{request_id}"))
        self.action, self.request_id = action, request_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> ResultButton:
        return cls(match["action"], match["rid"])

    async def callback(self, interaction: discord.Interaction) -> None:
        actions = actions_of(interaction)
        if self.action == "again":
            await actions.again(interaction, self.request_id)
        else:
            await actions.ask_words(interaction, self.request_id)


def result_view(request_id: str, lang: str) -> discord.ui.View:
    """The two buttons under an answer, labelled in `lang`."""
    view = discord.ui.View(timeout=None)
    for action in _BUTTONS:
        view.add_item(ResultButton(action, request_id, lang))
    return view


def words_modal(request_id: str, lang: str) -> discord.ui.Modal:
    """The form behind "Use my words" (`InteractionHandlers.on_modal` takes its answer)."""
    modal = discord.ui.Modal(title=t("use_my_words", lang)[:45],
                             custom_id=f"{PROMPT_PREFIX}{request_id}", timeout=None)
    modal.add_item(discord.ui.TextInput(
        label=t("words_label", lang)[:45], placeholder=t("words_placeholder", lang)[:100],
        custom_id="words", style=discord.TextStyle.paragraph, min_length=2,
        max_length=WORDS_MAX_CHARS))  # Discord's forms allow up to 4,000
    return modal


def submitted_words(data: dict[str, Any]) -> str:
    """The text typed into a submitted form (rows of inputs, or labelled inputs)."""
    found: list[str] = []

    def walk(components: list[dict[str, Any]]) -> None:
        for comp in components:
            if isinstance(comp.get("value"), str):
                found.append(comp["value"])
            walk(comp.get("components", []))
            if isinstance(comp.get("component"), dict):
                walk([comp["component"]])

    walk(data.get("components", []))
    return " ".join(" ".join(found).split())[:WORDS_MAX_CHARS]
