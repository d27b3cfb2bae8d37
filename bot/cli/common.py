"""What every `sonify` command shares: exit codes, the one-line error, a command's shape."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from core.config import Config
from core.errors import SonifyError

EXIT_FAILED = 1  # the command was understood but could not be done (a bad picture, no log)
EXIT_USAGE = 2  # the command, an option or the configuration is wrong (argparse's code too)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT


class CliError(SonifyError):
    """A problem with what the command was given, told in one line, with its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Command:
    """One `sonify` sub-command: a row of the command table in `bot.cli`.

    `add_arguments` gets the loaded configuration so that option help can show the defaults
    and bounds that will really apply.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace, Config], int]
    add_arguments: Callable[[argparse.ArgumentParser, Config], None] | None = None
