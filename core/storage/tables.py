"""The request log's tables: one row per request, the clip-cache index, per-channel cursors,
and the daily totals that outlive the rows.

The schema changes only through Alembic revisions (core/storage/migrations); these
definitions are what the newest revision creates, used by the queries.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

from core.records import (
    Delivery,
    InputKind,
    OutputKind,
    Platform,
    RequestStatus,
    SoundFit,
    SourceKind,
)


def check_values(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    """A CHECK that `column` holds one of the enum's values (or NULL): the domain's words
    (core/records.py) are the only ones a row can hold. Changing one is a migration."""
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


# The checks of revisions 0006 and 0009, by name: a migration that changes one drops and
# adds it.
REQUEST_CHECKS = (("status", RequestStatus, "ck_requests_status"),
                  ("delivery", Delivery, "ck_requests_delivery"),
                  ("platform", Platform, "ck_requests_platform"),
                  ("source_kind", SourceKind, "ck_requests_source_kind"),
                  ("input_kind", InputKind, "ck_requests_input_kind"),
                  ("output_kind", OutputKind, "ck_requests_output_kind"),
                  ("sound_fit", SoundFit, "ck_requests_sound_fit"))
TOTALS_CHECKS = (("status", RequestStatus, "ck_daily_totals_status"),
                 ("platform", Platform, "ck_daily_totals_platform"))

metadata = MetaData()

requests = Table(
    "requests", metadata,
    Column("id", String(24), primary_key=True),
    Column("platform", String(16), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("chat_id", String(64), nullable=False),
    Column("source_kind", String(16), nullable=False),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("image_sha256", String(64)),
    Column("caption", Text),
    Column("prompt", Text),
    Column("options", JSON),
    Column("seed", Integer),
    Column("lang", String(8), nullable=False, default="en"),
    Column("reply_context", JSON),
    Column("cache_key", String(64)),
    Column("status", String(16), nullable=False),
    Column("reason", String(32)),
    Column("queue_wait_s", Float),
    Column("caption_s", Float),
    Column("sound_s", Float),
    Column("encode_s", Float),
    Column("total_s", Float),
    Column("duration_s", Float),
    Column("cache_hit", Boolean, nullable=False, default=False),
    Column("batch_size", Integer),
    Column("files", JSON),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    # Where the picture comes from until it is fetched (a platform file id, a link).
    Column("source", JSON),
    # The platform's own id of what asked (an update, a message's n-th picture): a
    # redelivered update finds its row instead of making a second one.
    Column("dedupe_key", String(160)),
    Column("delivery", String(16)),
    Column("score", Float),  # the kept take's CLAP score, when takes were compared
    Column("worker", String(64)),  # which worker rendered it
    Column("attempts", Integer, nullable=False, default=0),  # renders started (crash retries)
    Column("user_name", String(64)),  # a readable name, where the platform gave one
    # With several processes (the redis backend): the turn a queued job was given, and the
    # identical job in flight a request waits for instead of being computed again.
    Column("fair_round", Integer),
    Column("rider_of", String(24)),
    # Refusals of one kind from one user within a minute are one row: how many it stands for.
    Column("times", Integer, nullable=False, default=1, server_default="1"),
    # Moving pictures (migration 0009): what came in (photo, animation, video; NULL on older
    # rows reads as photo), what went out (audio, video, audio_only: the MP4 did not fit the
    # platform's cap), the clip's length and how the sound was fitted to it (whole, looped).
    Column("input_kind", String(16)),
    Column("output_kind", String(16)),
    Column("input_seconds", Float),
    Column("sound_fit", String(16)),
    Index("ix_requests_user", "platform", "user_id", "created_at"),
    Index("ix_requests_status", "status"),
    Index("ix_requests_created", "created_at"),
    Index("ix_requests_dedupe", "dedupe_key", unique=True),
    Index("ix_requests_delivery", "delivery"),
    Index("ix_requests_rider_of", "rider_of"),
    Index("ix_requests_cache_key", "cache_key"),
    *(check_values(column, values, name) for column, values, name in REQUEST_CHECKS),
)

# Index of the clip cache (files live under <data_dir>/cache; see core/jobs/cache.py).
clips = Table(
    "clips", metadata,
    Column("clip_id", String(24), primary_key=True),
    Column("key", String(64), index=True),
    Column("caption", Text, nullable=False),
    Column("prompt", Text, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("duration_s", Float, nullable=False),
    Column("files", JSON, nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=False),
    Index("ix_clips_last_used_at", "last_used_at"),
)

# The last message handled per channel (Discord): after a restart, what came since is read
# back and answered (see bot/discord/catch_up.py).
cursors = Table(
    "cursors", metadata,
    Column("platform", String(16), primary_key=True),
    Column("channel_id", String(32), primary_key=True),
    Column("last_id", String(32), nullable=False),
    Column("is_private", Boolean, nullable=False, default=False),
    Column("updated_at", Float, nullable=False),
)

# With several processes, what every one of them must see lives in the database: the
# picture of a queued job (workers may run on other machines) and each clip's bytes
# (a worker encodes, any adapter delivers).
pictures = Table(
    "pictures", metadata,
    Column("request_id", String(24), primary_key=True),
    Column("png", LargeBinary, nullable=False),
    Column("created_at", Float, nullable=False),
)

clip_files = Table(
    "clip_files", metadata,
    Column("clip_id", String(24), primary_key=True),
    Column("fmt", String(8), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Random keys the service makes once and every process must share (the web page's
# identity key: a browser's cookie must be good at whichever web process it reaches).
service_keys = Table(
    "service_keys", metadata,
    Column("name", String(32), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

# Share links of web results (bot/web/share.py): the sha256 of each link's token, never the
# token; the small JPEG preview of the picture, kept while shared (the web process holds
# previews only in memory). Revoking a link deletes its row.
shares = Table(
    "shares", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("request_id", String(24), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("preview", LargeBinary),
    Index("ix_shares_request_id", "request_id"),
)

# What is left of finished rows once they are older than `[storage] keep_days` (see
# core/storage/retention.py): per UTC day, platform and status, how many requests (refusals
# by their `times`) and how many of those were cache hits — what the statistics count.
daily_totals = Table(
    "daily_totals", metadata,
    Column("day", String(10), primary_key=True),  # YYYY-MM-DD, UTC
    Column("platform", String(16), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("request_count", Integer, nullable=False),
    Column("cache_hits", Integer, nullable=False),
    *(check_values(column, values, name) for column, values, name in TOTALS_CHECKS),
)

# Settings that server and group admins set in chat (core/settings): one row per scope and
# key. The scope is a platform, a server or chat and, for per-channel keys, a channel ("" for
# the whole server or chat). `value` is JSON; the config file gives the defaults and bounds.
chat_settings = Table(
    "chat_settings", metadata,
    Column("platform", String(16), primary_key=True),
    Column("chat_id", String(64), primary_key=True),
    Column("channel_id", String(64), primary_key=True),
    Column("key", String(32), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_by", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Every change of a chat setting, old and new value (NULL: the config's default), who, when.
# Its newest id per server or chat is that scope's revision: a panel shown before it is stale.
chat_settings_audit = Table(
    "chat_settings_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform", String(16), nullable=False),
    Column("chat_id", String(64), nullable=False),
    Column("channel_id", String(64), nullable=False),
    Column("key", String(32), nullable=False),
    Column("old_value", JSON),
    Column("new_value", JSON),
    Column("changed_by", String(64), nullable=False),
    Column("changed_at", Float, nullable=False),
    Index("ix_chat_settings_audit_scope", "platform", "chat_id", "id"),
)
