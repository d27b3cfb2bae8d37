"""`sonify stats`: the request log's summary, read where the bots write it."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import CliError
from core.config import Config
from core.stats.collect import collect_stats
from core.stats.render import render_stats_text
from core.storage.migrate import sqlite_file
from core.storage.request_log import RequestLog


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the statistics; refuse a SQLite log that does not exist instead of creating one.

    An empty new file would print zeros, as if the bots had had no requests, when the
    command is only looking in the wrong place (another folder, another --config).
    """
    path = sqlite_file(config.database_url)
    if path is not None and not path.is_file():
        raise CliError(f"no request log at {path}; the bots write it in [storage] data_dir "
                       f"(from {config.source}): run sonify stats with the same --config and "
                       "folder as sonify run")

    async def summary() -> str:
        request_log = await RequestLog.open(config.database_url)
        try:
            return render_stats_text(await collect_stats(request_log))
        finally:
            await request_log.close()

    print(asyncio.run(summary()))
    return 0
