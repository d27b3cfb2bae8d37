"""The `sonify` command line: `image`, `run`, `stats`, `sync-commands`.

Every expected failure (bad config, missing model, bad image) ends the program
with one line on stderr and a non-zero exit code — never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot.app import run
from core.audio.encode import write_clip
from core.config import Config, load_config, secret_values
from core.errors import (
    ConfigError,
    ImageRejected,
    ModelMissingError,
    SonifyError,
    UserFacingError,
)
from core.i18n import describe_error
from core.intake.decode import DecodedImage, decode_image
from core.intake.fetch import ImageFetcher
from core.logs import setup_logging
from core.models.pipeline import PipelineInput
from core.options import GenerationOptions, check_seed
from core.stats.collect import collect_stats
from core.stats.render import render_stats_text
from core.storage.request_log import RequestLog

EXIT_USAGE = 2
EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonify", description="Listen to pictures.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="PATH",
                       help="TOML configuration file (default: ./config.toml if present)")
        p.add_argument("-v", "--verbose", action="store_true", help="log debug details")
        return p

    image = with_config(sub.add_parser("image", help="caption one image and write its sound"))
    image.add_argument("source", metavar="PATH_OR_URL", help="an image file or an http(s) link")
    image.add_argument("-o", "--output", required=True, metavar="OUT", help="where to write")
    image.add_argument("--format", choices=("ogg", "mp3", "wav"),
                       help="audio format (default: from OUT's extension, else ogg)")
    image.add_argument("--seconds", type=float, help="clip length in seconds")
    image.add_argument("--steps", type=int, help="diffusion steps")
    image.add_argument("--seed", type=int, help="random seed (default: random)")

    with_config(sub.add_parser("run", help="start the configured bots and the web page"))
    with_config(sub.add_parser("stats", help="print request statistics"))
    with_config(sub.add_parser("sync-commands", help="register Discord slash commands"))
    return parser


def _output_format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = Path(args.output).suffix.lower().lstrip(".")
    return suffix if suffix in ("ogg", "mp3", "wav") else "ogg"


def _load_source(source: str, config: Config) -> DecodedImage:
    """Decode a local file, or fetch a link through the hardened image intake."""

    if source.lower().startswith(("http://", "https://")):
        async def fetch() -> DecodedImage:
            fetcher = ImageFetcher(config.images)
            try:
                return await fetcher.fetch_image(source)
            finally:
                await fetcher.close()

        return asyncio.run(fetch())
    path = Path(source)
    if not path.is_file():
        raise UserFacingError(f"no such file: {source}", code="no_file")
    if path.stat().st_size > config.images.max_bytes:
        raise UserFacingError(f"{source}: larger than [images] max_bytes "
                              f"({config.images.max_bytes} bytes)", code="too_large")
    return decode_image(path.read_bytes(), config.images)


def cmd_image(args: argparse.Namespace, config: Config) -> int:
    """Caption one image, render its sound, write the clip, print the caption."""
    from core.models.loading import ModelLoader  # torch is heavy: only for this command

    options = GenerationOptions.from_config(config.generation, seconds=args.seconds,
                                            steps=args.steps)
    seed = check_seed(args.seed)
    decoded = _load_source(args.source, config)
    pipeline = ModelLoader(config).pipeline()
    (result,) = pipeline.run([PipelineInput(image=decoded.image, seed=seed)], options)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    duration = write_clip(result.audio, result.sample_rate, out, _output_format(args))
    print(result.caption)
    print(f"wrote {out} ({duration:.2f} s, seed {seed})", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace, config: Config) -> int:

    return run(config)


def cmd_stats(args: argparse.Namespace, config: Config) -> int:

    async def main() -> str:
        request_log = await RequestLog.open(config.database_url)
        try:
            return render_stats_text(await collect_stats(request_log))
        finally:
            await request_log.close()

    print(asyncio.run(main()))
    return 0


def cmd_sync_commands(args: argparse.Namespace, config: Config) -> int:
    """Register the Discord commands: reads the config and talks to Discord, nothing else."""
    from bot.discord.commands import sync_commands  # discord.py is heavy: only for this command

    print(f"registered {asyncio.run(sync_commands(config))} commands")
    return 0


COMMANDS = {"image": cmd_image, "run": cmd_run, "stats": cmd_stats,
            "sync-commands": cmd_sync_commands}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"sonify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(secret_values(config), logging.DEBUG if args.verbose else logging.INFO)
    try:
        return COMMANDS[args.command](args, config)
    except (ConfigError, ModelMissingError) as exc:
        print(f"sonify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImageRejected as exc:
        # The catalogue's text also says which formats work and what the limits are.
        print(f"sonify: {describe_error(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except SonifyError as exc:
        print(f"sonify: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
