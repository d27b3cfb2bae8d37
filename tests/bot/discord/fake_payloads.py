"""Payloads and records of the fake Discord: ids, users, the guild, messages, calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
JSON = dict[str, Any]

BOT_ID = 900_000_000_000_000_001  # bot user id == application id, as on Discord
GUILD_ID = 900_000_000_000_000_100
WATCHED = 900_000_000_000_000_200  # channel the bot watches
OTHER = 900_000_000_000_000_201  # channel it does not watch
THREAD = 900_000_000_000_000_202  # a thread in the watched channel
OTHER_THREAD = 900_000_000_000_000_203  # a thread in the channel it does not watch
STAFF = 900_000_000_000_000_204  # a channel hidden from everyone but the admins (and the bot)
ALICE = 900_000_000_000_000_301
BOB = 900_000_000_000_000_302
CAROL = 900_000_000_000_000_303
ADMIN = 900_000_000_000_000_304  # holds a role with Manage Server
ADMIN_ROLE = 900_000_000_000_000_400
MEMBER_PERMS = (1 << 10) | (1 << 11) | (1 << 15) | (1 << 16) | (1 << 31)
MANAGE_GUILD = 1 << 5
VIEW = 1 << 10  # VIEW_CHANNEL
EPHEMERAL = 1 << 6
LOADING = 1 << 7
VOICE = 1 << 13  # IS_VOICE_MESSAGE
CONTENT_TYPES = {"ogg": "audio/ogg", "mp3": "audio/mpeg", "png": "image/png"}
NAMES = {BOT_ID: "Sonify", ALICE: "alice", BOB: "bob", CAROL: "carol", ADMIN: "admin"}


@dataclass
class Part:
    """One uploaded file of a multipart request."""

    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class Call:
    """One REST request the fake received."""

    seq: int
    at: float
    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    json: Any
    files: list[Part]


@dataclass
class Upload:
    """A file a user attaches; served by the fake's CDN."""

    filename: str
    data: bytes
    content_type: str | None = "image/png"
    size: int | None = None  # claimed size (defaults to len(data))


@dataclass
class Interaction:
    """An interaction the fake sent, and what the bot answered."""

    id: int
    token: str
    payload: JSON
    callbacks: list[Call] = field(default_factory=list)
    original: JSON | None = None  # the response message (after edits)
    followups: list[JSON] = field(default_factory=list)


def user(uid: int) -> JSON:
    return {"id": str(uid), "username": NAMES.get(uid, f"user{uid}"), "discriminator": "0",
            "global_name": None, "avatar": None, "bot": uid == BOT_ID}


def member(uid: int) -> JSON:
    return {"user": user(uid), "roles": [str(ADMIN_ROLE)] if uid == ADMIN else [],
            "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False, "mute": False,
            "nick": None, "flags": 0}


def member_permissions(uid: int) -> int:
    return MEMBER_PERMS | (MANAGE_GUILD if uid == ADMIN else 0)


def _channel(cid: int, name: str, pos: int, overwrites: list[JSON] | None = None) -> JSON:
    return {"id": str(cid), "type": 0, "name": name, "position": pos,
            "permission_overwrites": overwrites or [], "guild_id": str(GUILD_ID), "nsfw": False,
            "parent_id": None, "topic": None, "rate_limit_per_user": 0}


def _thread(tid: int, parent: int, name: str) -> JSON:
    """A public thread (type 11) as GUILD_CREATE lists it."""
    return {"id": str(tid), "type": 11, "guild_id": str(GUILD_ID), "parent_id": str(parent),
            "owner_id": str(ALICE), "name": name, "last_message_id": None,
            "rate_limit_per_user": 0, "message_count": 0, "member_count": 1, "flags": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440,
                                "archive_timestamp": "2026-01-01T00:00:00+00:00",
                                "locked": False}}


def _role(rid: int, name: str, perms: int, pos: int) -> JSON:
    return {"id": str(rid), "name": name, "permissions": str(perms), "position": pos,
            "color": 0, "hoist": False, "managed": False, "mentionable": False, "flags": 0}


def guild(locale: str) -> JSON:
    """The full GUILD_CREATE payload of the one test server."""
    return {"id": str(GUILD_ID), "name": "Test server", "icon": None,
            "owner_id": str(CAROL), "unavailable": False, "large": False,
            "member_count": 5, "preferred_locale": locale, "features": [],
            "roles": [_role(GUILD_ID, "@everyone", MEMBER_PERMS, 0),
                      _role(ADMIN_ROLE, "admins", MANAGE_GUILD, 1)],
            "channels": [_channel(WATCHED, "pictures", 0), _channel(OTHER, "chat", 1),
                         _channel(STAFF, "staff", 2, [{"id": str(GUILD_ID), "type": 0,
                                                       "allow": "0", "deny": str(VIEW)}])],
            "members": [member(u) for u in (BOT_ID, ALICE, BOB, CAROL, ADMIN)],
            "emojis": [], "stickers": [], "voice_states": [],
            "threads": [_thread(THREAD, WATCHED, "more pictures"),
                        _thread(OTHER_THREAD, OTHER, "more chat")],
            "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "joined_at": "2026-01-01T00:00:00+00:00", "mfa_level": 0,
            "verification_level": 0, "explicit_content_filter": 0,
            "default_message_notifications": 0, "premium_tier": 0, "nsfw_level": 0}


def message(mid: int, channel_id: int, author: int, content: str, **extra: Any) -> JSON:
    msg: JSON = {"id": str(mid), "channel_id": str(channel_id),
                 "author": user(author), "content": content, "type": 0, "flags": 0,
                 "timestamp": "2026-01-01T00:00:00+00:00", "edited_timestamp": None,
                 "tts": False, "mention_everyone": False, "mentions": [],
                 "mention_roles": [], "attachments": [], "embeds": [], "pinned": False,
                 "components": []}
    msg.update(extra)
    return msg


def application() -> JSON:
    return {"id": str(BOT_ID), "name": "Sonify", "icon": None, "description": "",
            "bot_public": True, "bot_require_code_grant": False, "flags": 0,
            "verify_key": "0" * 64, "owner": user(CAROL), "team": None,
            "summary": "", "rpc_origins": []}
