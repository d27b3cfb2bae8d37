"""`sonify stats`: the request log's summary, read where the bots write it."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import CliError
from core.config import Config
from core.services import log_file, stats_summary


def run(args: argparse.Namespace, config: Config) -> int:
    """Print the statistics; refuse a SQLite log that does not exist instead of creating one.

    An empty new file would print zeros, as if the bots had had no requests, when the
    command is only looking in the wrong place (another folder, another --config).
    """
    path = log_file(config)
    if path is not None and not path.is_file():
        raise CliError(f"no request log at {path}; the bots write it in [storage] data_dir "
                       f"(from {config.source}): run sonify stats with the same --config and "
                       "folder as sonify run")

    print(asyncio.run(stats_summary(config)))
    return 0
