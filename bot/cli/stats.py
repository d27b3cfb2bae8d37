"""`sonify stats`: the request log's summary, read where the bots write it."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import CliError
from core.config import Config
from core.services import log_file, stats_summary

PLATFORMS = ("telegram", "discord", "web", "cli")


def add_arguments(parser: argparse.ArgumentParser, config: Config) -> None:
    parser.add_argument("--chat", metavar="PLATFORM:ID[,ID...]",
                        help="only these chats' requests: a Telegram group "
                             "(telegram:-1001234567890) or a Discord server's channels "
                             "(discord:CHANNEL_ID,CHANNEL_ID)")


def chat_filter(value: str | None) -> tuple[str, list[str]] | None:
    """`--chat`'s value as (platform, chat ids); CliError saying what is wrong."""
    if value is None:
        return None
    platform, _, ids = value.partition(":")
    chat_ids = [i.strip() for i in ids.split(",") if i.strip()]
    if platform not in PLATFORMS or not chat_ids:
        raise CliError(f"--chat {value!r}: expected PLATFORM:ID[,ID...] with PLATFORM one of "
                       f"{', '.join(PLATFORMS)} (for example telegram:-1001234567890)")
    return platform, chat_ids


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the statistics; refuse a SQLite log that does not exist instead of creating one.

    An empty new file would print zeros, as if the bots had had no requests, when the
    command is only looking in the wrong place (another folder, another --config).
    """
    chats = chat_filter(getattr(args, "chat", None))
    path = log_file(config)
    if path is not None and not path.is_file():
        raise CliError(f"no request log at {path}; the bots write it in [storage] data_dir "
                       f"(from {config.source}): run sonify stats with the same --config and "
                       "folder as sonify run")

    print(asyncio.run(stats_summary(config, chats)))
    return 0
