"""`sonify worker`: one GPU worker of the redis backend (README, "More than one GPU")."""

from __future__ import annotations

import argparse
import asyncio
import logging

from bot.app import stop_on_signals
from bot.cli.common import EXIT_USAGE, CliError
from core.config import Config
from core.services import default_worker_name, run_worker

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, config: Config) -> None:
    parser.add_argument("--name", metavar="NAME",
                        help="this worker's name in logs and statistics "
                             f"(default: host name and process id, e.g. {default_worker_name()})")


def run(args: argparse.Namespace, config: Config) -> int:
    """Render jobs from the queue until SIGINT/SIGTERM; the running batch finishes first."""
    if config.jobs.backend != "redis":
        raise CliError(f'{config.source}: `sonify worker` needs [jobs] backend = "redis" '
                       "(with the local backend `sonify run` renders itself)", EXIT_USAGE)
    asyncio.run(_work(config, args.name))
    return 0


async def _work(config: Config, name: str | None) -> None:
    # torch and the model libraries take seconds to import: only this command needs them, so
    # `sonify --version`, `stats` and every early one-line error do not wait for them.
    from core.models.loading import ModelLoader

    stop = stop_on_signals()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    await run_worker(config, name=name, stop=stop,
                     pipeline_factory=lambda: ModelLoader(config).pipeline())
