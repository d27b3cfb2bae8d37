"""`sonify run` and `sonify sync-commands`: the long-running bots, and Discord's command list."""

from __future__ import annotations

import argparse
import asyncio

from bot.app import exit_now, run
from core.config import Config


def run_bots(args: argparse.Namespace, config: Config) -> int:
    """Start every configured adapter and serve until SIGINT/SIGTERM."""
    exit_now(run(config))


def sync_commands(args: argparse.Namespace, config: Config) -> int:
    """Register the Discord commands: reads the config and talks to Discord, nothing else."""
    from bot.discord.commands import sync_commands as register  # discord.py is heavy

    print(f"registered {asyncio.run(register(config))} commands")
    return 0
