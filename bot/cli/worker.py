"""`sonify worker`: one GPU worker of the redis backend (README, "More than one GPU")."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from bot.app import stop_on_signals
from bot.cli.common import EXIT_USAGE, CliError
from bot.ops.server import OpsServer
from core.config import Config
from core.errors import ConfigError
from core.ops.wiring import Operations
from core.services import default_worker_name, run_worker

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser, config: Config) -> None:
    parser.add_argument("--name", metavar="NAME",
                        help="this worker's name in logs and statistics "
                             f"(default: host name and process id, e.g. {default_worker_name()})")
    parser.add_argument("--metrics-port", metavar="PORT", type=int,
                        help="serve /metrics, /livez and /readyz on this port (0: any free "
                             "one; default: none)")
    parser.add_argument("--metrics-host", metavar="HOST", default="127.0.0.1",
                        help="the address for --metrics-port (default: %(default)s; 0.0.0.0 "
                             "for a Prometheus on another machine or container)")


def run(args: argparse.Namespace, config: Config) -> int:
    """Render jobs from the queue until SIGINT/SIGTERM; the running batch finishes first."""
    if config.jobs.backend != "redis":
        raise CliError(f'{config.source}: `sonify worker` needs [jobs] backend = "redis" '
                       "(with the local backend `sonify run` renders itself)", EXIT_USAGE)
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65_535:
        raise CliError("--metrics-port: use a port from 0 to 65535", EXIT_USAGE)
    asyncio.run(_work(config, args.name, args.metrics_host, args.metrics_port))
    return 0


async def _work(config: Config, name: str | None, metrics_host: str,
                metrics_port: int | None) -> None:
    # torch and the model libraries take seconds to import: only this command needs them, so
    # `sonify --version`, `stats` and every early one-line error do not wait for them.
    from core.models.loading import ModelLoader

    @contextlib.asynccontextmanager
    async def serving(ops: Operations) -> AsyncIterator[None]:
        """/metrics, /livez and /readyz while the worker runs (up while the models load: not
        ready until they are loaded)."""
        if metrics_port is None:
            yield
            return
        server = OpsServer(ops, metrics_host, metrics_port)
        try:
            await server.start()
        except OSError as exc:
            raise ConfigError(f"--metrics-port: cannot listen on {metrics_host}:"
                              f"{metrics_port} ({exc.strerror or exc})") from None
        try:
            yield
        finally:
            await server.stop()

    stop = stop_on_signals()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    await run_worker(config, name=name, stop=stop, serving=serving,
                     pipeline_factory=lambda: ModelLoader(config).pipeline())
