"""The `sonify` command line: `listen` (or `image`), `run`, `worker`, `stats`, `health`,
`sync-commands`.

Every expected failure (bad config, missing model, bad image) ends the program with one
line per problem on stderr and a non-zero exit code — never a traceback. Each command is a
row of `COMMANDS`: a new one is a module with `run` (and `add_arguments`, if it takes any)
and one more row.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version

from bot.cli import health, image, service, stats, worker
from bot.cli.common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliError, Command
from core.config import Config, load_config, secret_values
from core.errors import ConfigError, ImageRejected, ModelMissingError, SonifyError
from core.i18n import describe_error
from core.logs import report_fatal_signals, setup_logging
from core.secrecy import SecretMasker

COMMANDS: tuple[Command, ...] = (
    Command("listen", "listen to one picture, video or animation and write its sound (or "
            "the video with its sound)", image.run, image.add_arguments),
    Command("image", "the same as `listen` (its first name)", image.run, image.add_arguments),
    Command("run", "start the configured bots and the web page", service.run_bots),
    Command("worker", "render jobs for `sonify run` (jobs backend \"redis\")", worker.run,
            worker.add_arguments),
    Command("stats", "print request statistics", stats.run, stats.add_arguments),
    Command("health", "ask a running sonify whether it is ready (exit code 0: yes)",
            health.run, health.add_arguments),
    Command("sync-commands", "register Discord slash commands", service.sync_commands),
)


def package_version() -> str:
    try:
        return version("sonify")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser(config: Config, commands: tuple[Command, ...] = COMMANDS,
                 ) -> argparse.ArgumentParser:
    """The parser; `config` supplies the defaults and bounds that option help shows."""
    parser = argparse.ArgumentParser(prog="sonify", description="Listen to pictures.")
    parser.add_argument("--version", action="version", version=f"sonify {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(p, config)
        p.add_argument("--config", metavar="PATH",
                       help="TOML configuration file (default: ./config.toml if present, "
                            "else built-in defaults)")
        p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    return parser


def preload_config(argv: list[str]) -> tuple[Config, ConfigError | None]:
    """The configuration `--config` names (or the default), read before the full parse.

    The option help shows the defaults and bounds that will apply, so the configuration is
    read first; a broken one leaves the built-in values for the help and is reported after
    parsing (`--help` and `--version` still work).
    """
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--config")
    try:
        known, _ = pre.parse_known_args(argv)
    except argparse.ArgumentError:  # `--config` without a value: the full parse says so
        return Config(), None
    try:
        return load_config(known.config), None
    except ConfigError as exc:
        return Config(), exc


def fail(message: object, code: int, secrets: Iterable[str] = ()) -> int:
    """Print a problem, one `sonify: ` line per line of it, `secrets` masked; return `code`."""
    # Libraries' messages may quote a token or a database URL's password in any spelling.
    for line in SecretMasker(secrets).mask(str(message)).splitlines() or [""]:
        print(f"sonify: {line}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    config, config_error = preload_config(argv)
    args = build_parser(config).parse_args(argv)
    if config_error is not None:
        return fail(config_error, EXIT_USAGE)
    secrets = secret_values(config)
    setup_logging(secrets, logging.DEBUG if args.verbose else logging.INFO,
                  config.logging.format)
    report_fatal_signals()
    command = next(c for c in COMMANDS if c.name == args.command)
    try:
        return command.run(args, config)
    except CliError as exc:
        return fail(exc, exc.exit_code, secrets)
    except (ConfigError, ModelMissingError) as exc:
        return fail(exc, EXIT_USAGE, secrets)
    except ImageRejected as exc:
        # The catalogue's text also says which formats work and what the limits are.
        return fail(describe_error(exc), EXIT_FAILED, secrets)
    except SonifyError as exc:
        return fail(exc, EXIT_FAILED, secrets)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:
        # A bug: its traceback goes through the log's secret masking, never raw to stderr.
        logging.getLogger("sonify").exception("unexpected error in `sonify %s`", args.command)
        return EXIT_FAILED
