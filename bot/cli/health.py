"""`sonify health`: ask a running Sonify process whether it is ready (a health check).

For container health checks and scripts: it asks `/readyz` (or `/livez` with `--live`) of
the `sonify run` this configuration describes — on `[metrics] listen` if set, else on the
web page, with its token — or of a `sonify worker` started with `--metrics-port` (`--port`).
Exit code 0: ready (or live); 1: not, with one line saying which part fails.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request

from bot.cli.common import EXIT_FAILED, EXIT_USAGE, CliError
from core.addresses import parse_listen
from core.config import Config

TIMEOUT_S = 5.0


def add_arguments(parser: argparse.ArgumentParser, config: Config) -> None:
    parser.add_argument("--port", type=int, metavar="PORT",
                        help="ask this port on HOST instead (a worker's --metrics-port)")
    parser.add_argument("--host", metavar="HOST", default="127.0.0.1",
                        help="with --port: the address to ask (default: %(default)s)")
    parser.add_argument("--live", action="store_true",
                        help="only ask whether the process answers (/livez), not whether "
                             "everything it needs works (/readyz)")


def target(args: argparse.Namespace, config: Config) -> tuple[str, str]:
    """(base URL, web token or "") of the process to ask."""
    if args.port is not None:
        return _url(args.host, args.port), ""
    if config.metrics.listen:
        return _url(*parse_listen(config.metrics.listen)), ""
    if config.web_enabled:
        return _url(config.web.host, config.web.port), config.web.token
    raise CliError(f"{config.source}: nothing here serves /readyz: set [metrics] listen, "
                   "enable the web page, or give --port (a worker's --metrics-port)",
                   EXIT_USAGE)


def _url(host: str, port: int) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def run(args: argparse.Namespace, config: Config) -> int:
    """Print "ready" (exit 0) or what is not (exit 1)."""
    base, token = target(args, config)
    path = "/livez" if args.live else "/readyz"
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    # Never through a proxy from the environment: this asks a process on this machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"no answer from {base}{path} ({reason})", EXIT_FAILED) from None
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    if status == 200:
        print("live" if args.live else "ready")
        return 0
    checks = answer.get("checks") if isinstance(answer, dict) else None
    if status == 503 and isinstance(checks, dict):
        failing = ", ".join(f"{name}: {state}" for name, state in checks.items()
                            if state != "ok")
        raise CliError(f"not ready ({failing})", EXIT_FAILED)
    raise CliError(f"{base}{path} answered {status}", EXIT_FAILED)
