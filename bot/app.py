"""`sonify run`: build the shared services once, start every configured adapter."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from typing import Protocol

from bot.ops.server import OpsServer
from core.addresses import parse_listen
from core.config import Config
from core.errors import ConfigError
from core.services import Services, check_log_free

logger = logging.getLogger(__name__)


class Adapter(Protocol):
    """What `serve` needs from a platform adapter."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def build_adapters(services: Services) -> list[Adapter]:
    """One adapter per configured platform.

    Each platform's package is imported here, when it is configured: discord.py and
    python-telegram-bot are heavy, and a web-only run should not load them.
    """
    config = services.config
    adapters: list[Adapter] = []
    if config.telegram.token:
        from bot.telegram.adapter import TelegramAdapter

        adapters.append(TelegramAdapter(services))
    if config.discord.token:
        from bot.discord.adapter import DiscordAdapter

        adapters.append(DiscordAdapter(services))
    if config.web_enabled:
        from bot.web.server import WebAdapter

        adapters.append(WebAdapter(services))
    return adapters


def server_ports(config: Config) -> list[tuple[str, str, str, int]]:
    """(adapter, key, host, port) of every port the configured adapters will listen on."""
    ports = []
    if config.web_enabled and config.web.port:  # port 0: the system picks a free one
        ports.append(("web", "[web] port", config.web.host, config.web.port))
    if config.telegram.token and config.telegram.mode == "webhook":
        ports.append(("telegram", "[telegram] webhook_port", config.telegram.webhook_listen,
                      config.telegram.webhook_port))
    if config.metrics.listen:
        host, port = parse_listen(config.metrics.listen)
        if port:
            ports.append(("metrics", "[metrics] listen", host, port))
    return ports


async def check_port(host: str, port: int) -> None:
    """Bind `host`:`port` the way aiohttp's server will, and let go at once; OSError if taken.

    Models take seconds to minutes to load: a port that is in use must stop start-up before
    that, not after. The adapter binds again when it starts (a port taken in between is
    still reported then).
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in dict.fromkeys(infos):
        try:
            sock = socket.socket(family, kind, proto)
        except OSError:
            continue  # an address family this machine lacks: the server skips it too
        with sock:
            # As the server does: a previous run's connections in TIME_WAIT are no conflict,
            # while a socket that listens there still is.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)


def _port_problem(exc: OSError, host: str, port: int, key: str) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (f"{where} is already in use; set another {key} or stop the program that "
                "listens there")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine"
    if exc.errno == errno.EACCES:
        return f"listening on {where} needs more privileges (ports below 1024)"
    return f"cannot listen on {where}: {exc.strerror or exc}"


async def check_ports(config: Config) -> None:
    """ConfigError naming the adapter and the key when a port it needs cannot be bound."""
    for adapter, key, host, port in server_ports(config):
        try:
            await check_port(host, port)
        except OSError as exc:
            raise ConfigError(f"{config.source}: the {adapter} adapter cannot start: "
                              f"{_port_problem(exc, host, port, key)}") from None


async def serve(config: Config, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then shut down in order: engine, adapters, storage."""
    if not (config.telegram.token or config.discord.token or config.web_enabled):
        raise ConfigError(f"{config.source}: nothing to run: set [telegram] token, "
                          "[discord] token, or [web] enabled = true")
    # A second `sonify run` on the same local log is told so, not that the first one's port
    # is taken (the lease itself is taken when the local backend starts).
    check_log_free(config)
    await check_ports(config)  # before the models load: a taken port is told at once
    services = await Services.create(config)
    adapters: list[Adapter] = []
    ops_server: OpsServer | None = None
    try:
        if config.metrics.listen:  # up while the models load: /readyz says "models: not loaded"
            ops_server = OpsServer(services.ops, *parse_listen(config.metrics.listen))
            await _start(ops_server, "metrics", config)
        # Before any adapter starts: a missing model stops start-up with one line instead
        # of failing every request, and the first request does not wait for the load.
        await services.engine.load_models()
        for adapter in build_adapters(services):
            # /readyz names every configured platform, and says which one is not connected.
            ready = getattr(adapter, "ready", None)
            if ready is not None:
                services.ops.health.add(adapter.name, ready)
            try:
                await adapter.start()
            except OSError as exc:  # e.g. the web port is taken: one line, not a traceback
                raise ConfigError(f"{config.source}: the {adapter.name} adapter cannot start: "
                                  f"{exc.strerror or exc}") from None
            adapters.append(adapter)
            logger.info("%s adapter started", adapter.name)
        # Only now can re-run jobs from before a crash be answered by their adapter.
        await services.engine.resume_recovered()
        await stop.wait()
        logger.info("stopping: finishing the running batch, keeping queued jobs for next start")
    finally:
        # The engine stops first so results of the running batch still reach the adapters.
        await services.engine.stop(config.jobs.shutdown_timeout_s)
        for adapter in reversed(adapters):
            try:
                await adapter.stop()
            except Exception:
                logger.exception("%s adapter failed to stop cleanly", adapter.name)
        if ops_server is not None:
            await ops_server.stop()
        await services.close()


async def _start(server: OpsServer, name: str, config: Config) -> None:
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(f"{config.source}: the {name} listener cannot start: "
                          f"{exc.strerror or exc}") from None


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT/SIGTERM (the first: finish the running batch and stop); a second
    signal exits at once, since a render that will not end should not hold the process."""
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            logger.warning("%s again: exiting without waiting", sig.name)
            os._exit(130)
        logger.warning("%s received: stopping (a second one exits at once)", sig.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    return stop


def run(config: Config) -> int:
    """Blocking entry point with SIGINT/SIGTERM handling; returns the exit code."""

    async def main() -> None:
        await serve(config, stop_on_signals())

    asyncio.run(main())
    logger.info("stopped")
    return 0
