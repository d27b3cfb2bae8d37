"""`sonify listen PATH_OR_URL -o OUT` (also `sonify image`): one picture, or one video or
animation, no queue — the caption on stdout, a clip (or the video with its sound: `-o x.mp4`).

Everything that can be checked without the models (options, the output name and folder,
the picture) is checked before they load, so a mistake costs a second, not minutes. The
stages after that show progress on stderr (`bot.cli.progress`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import re
import stat
import sys
from pathlib import Path

from bot.cli.common import EXIT_USAGE, CliError
from bot.cli.progress import progress_for
from core.audio.encode import FORMATS, clip_duration, encode_clip, format_for_path
from core.audio.video import PAD_S, add_soundtrack
from core.config import MAX_SEED, MAX_STEPS, MIN_SECONDS, Config
from core.errors import BadRequest
from core.files import write_atomically
from core.intake.decode import DecodedImage
from core.intake.fetch import ImageFetcher
from core.intake.moving import decode_upload, decode_upload_async, moving_of
from core.jobs.request import VIDEO_FORMAT, video_seconds
from core.models.frames import clip_caption_parts
from core.models.pipeline import PipelineInput
from core.options import GenerationOptions, check_seed

# A link is anything that starts with a scheme and "//"; a Windows drive ("C:\") is not.
_LINK = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
LINK_SCHEMES = ("http", "https")


def add_arguments(parser: argparse.ArgumentParser, config: Config) -> None:
    generation = config.generation
    # Where the defaults come from, when a file set them.
    origin = "" if config.source == "built-in defaults" else f", from {config.source}"
    parser.add_argument("source", metavar="PATH_OR_URL",
                        help="an image, a video (MP4, MOV, WebM) or an animated GIF, WebP or "
                             "PNG file, or an http(s) link to one")
    parser.add_argument("-o", "--output", required=True, metavar="OUT",
                        help="the clip to write; its extension picks the format: .ogg (or "
                             ".opus, .oga) OGG/Opus, .mp3, .wav; for a video or an animation "
                             ".mp4 writes the video with its new sound")
    parser.add_argument("--format", choices=tuple(FORMATS),
                        help="audio format, when OUT has no extension (default: from OUT's "
                             "extension; both given must agree)")
    parser.add_argument("--seconds", type=float, metavar="S",
                        help=f"clip length in seconds, {MIN_SECONDS:g} to "
                             f"{generation.max_seconds:g} (default: {generation.seconds:g}"
                             f"{origin})")
    parser.add_argument("--steps", type=int, metavar="N",
                        help=f"diffusion steps, 1 to {MAX_STEPS}; more is slower and finer "
                             f"(default: {generation.steps}{origin})")
    parser.add_argument("--seed", type=int, metavar="N",
                        help=f"random seed, 0 to {MAX_SEED}: the same picture, options and "
                             "seed give the same clip (default: a random one, printed at "
                             "the end)")
    parser.add_argument("--mkdir", action="store_true",
                        help="create OUT's folder if it does not exist (default: refuse, "
                             "so a mistyped folder name is not silently created)")


def output_format(out: Path, requested: str | None) -> str:
    """The format OUT's extension names; `--format` may only agree with it or stand in for it."""
    if out.suffix.lower() == ".mp4" and requested is None:
        return VIDEO_FORMAT
    if not out.suffix:
        if requested:
            return requested
        raise CliError(f"{out}: no extension to tell the format from; name it .ogg, .mp3 or "
                       ".wav, or give --format", EXIT_USAGE)
    try:
        named = format_for_path(out)
    except ValueError as exc:  # its message names the extensions that work
        raise CliError(str(exc), EXIT_USAGE) from None
    if requested and requested != named:
        raise CliError(f"{out}: the extension says {named} but --format says {requested}; "
                       "make them agree", EXIT_USAGE)
    return named


def check_output(out: Path, *, make_folder: bool = False) -> None:
    """Refuse an OUT that cannot be written, before minutes of rendering.

    A missing folder is refused unless `make_folder` (`--mkdir`): a typo in a folder name
    would otherwise become a new folder holding the clip where nobody looks.
    """
    if out.is_dir():
        raise CliError(f"{out} is a folder; give a file name, such as {out / 'clip.ogg'}",
                       EXIT_USAGE)
    folder = out.parent
    if not folder.exists() and not make_folder:
        raise CliError(f"cannot write {out}: there is no folder {folder}; create it, or add "
                       "--mkdir", EXIT_USAGE)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # with --mkdir the folders missing below it are made at the end
    if not folder.is_dir():
        raise CliError(f"cannot write {out}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {out}: no permission to write in {folder}")


def load_source(source: str, config: Config) -> DecodedImage:
    """Decode a local file, or fetch an http(s) link through the hardened image intake."""
    link = _LINK.match(source)
    if link:
        scheme = link.group(1).lower()
        if scheme not in LINK_SCHEMES:
            # The link itself is not repeated: it may carry a password.
            raise CliError(f"{scheme}:// links are not supported; give an http:// or https:// "
                           "link, or a local file")
        return asyncio.run(_fetch(source, config))
    path = Path(source)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CliError(f"no such file: {source}") from None
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CliError(f"{source} is a folder; give one image file")
    if not stat.S_ISREG(info.st_mode):
        raise CliError(f"{source} is not a regular file; give one image file")
    limit = max(config.images.max_bytes, config.video.max_bytes)
    if info.st_size > limit:
        raise CliError(f"{source}: larger than [images] max_bytes and [video] max_bytes "
                       f"({limit} bytes)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {source}: {exc.strerror or exc}") from None
    return decode_upload(data, config.images, config.video)


async def _fetch(url: str, config: Config) -> DecodedImage:
    fetcher = ImageFetcher(config.images)
    try:
        data = await fetcher.fetch(url, max_bytes=max(config.images.max_bytes,
                                                      config.video.max_bytes))
    finally:
        await fetcher.close()
    return await decode_upload_async(data, config.images, config.video)


def write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically, with the permissions the umask gives new files.

    Created with mode 0666 for the kernel to apply the umask, as for any file a command
    creates (tempfile.mkstemp would make it 0600, private to its owner).
    """
    write_atomically(path, data, mode=0o666)


def run(args: argparse.Namespace, config: Config) -> int:
    """Caption one image, render its sound, write the clip, print the caption."""
    try:
        options = GenerationOptions.from_config(config.generation, seconds=args.seconds,
                                                steps=args.steps)
        seed = check_seed(args.seed)
    except BadRequest as exc:  # an option out of its bounds: a command-line mistake
        raise CliError(str(exc), EXIT_USAGE) from None
    out = Path(args.output)
    check_output(out, make_folder=args.mkdir)
    fmt = output_format(out, args.format)
    decoded = load_source(args.source, config)
    video = moving_of(decoded)
    if fmt == VIDEO_FORMAT and video is None:
        raise CliError(f"{out}: an .mp4 answer needs a video or an animated picture; "
                       f"{args.source} is a still picture (name OUT .ogg, .mp3 or .wav)",
                       EXIT_USAGE)
    if video is not None:  # the sound spans the clip: its length is the clip's
        seconds = video_seconds(video.clip.timing.duration_s, config.generation)
        options = dataclasses.replace(options, seconds=seconds)
    with progress_for(sys.stderr) as progress:
        with progress.stage("libraries", "loading torch and the model libraries"):
            # Seconds of imports: only once the inputs are known to be good, and only here.
            from core.models.loading import ModelLoader

            loader = ModelLoader(config)
        with progress.stage("caption model", "loading the caption model"):
            loader.captioner()
        with progress.stage("sound model", "loading the sound model"):
            loader.sound_generator()
        pipeline = loader.pipeline()
        if video is None:
            with progress.stage("caption", "captioning the picture"):
                (caption,) = pipeline.captions([decoded.image])
            given = PipelineInput(caption=caption, seed=seed)
        else:
            with progress.stage("caption", f"captioning {len(video.clip.frames)} frames"):
                caption, extra = clip_caption_parts(pipeline.captions(list(video.clip.frames)))
            given = PipelineInput(prompt=pipeline.clip_prompt_for(caption, extra), seed=seed)
        with progress.stage("sound", "rendering the sound", options.steps) as report:
            (result,) = pipeline.run([given], options, progress=report)
            result.caption = caption
        with progress.stage("encoding", f"encoding {fmt}"):
            if fmt == VIDEO_FORMAT and video is not None:
                answer = add_soundtrack(video.data, video.clip, result.audio,
                                        result.sample_rate, config.video)
                assert answer.data is not None  # no size cap here
                data = answer.data
            else:
                data = encode_clip(result.audio, result.sample_rate, fmt)
            try:
                write_file(out, data)
            except OSError as exc:
                raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(result.caption)
    times = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in progress.seconds.items())
    length = video.clip.timing.duration_s if fmt == VIDEO_FORMAT and video is not None \
        else clip_duration(data)
    print(f"sonify: wrote {out} ({length:.2f} s of {fmt}, seed {seed}) in "
          f"{sum(progress.seconds.values()):.1f} s: {times}", file=sys.stderr)
    if video is not None and options.seconds < video.clip.timing.duration_s - PAD_S:
        print(f"sonify: the sound is {options.seconds:g} s long and repeats over the "
              f"{video.clip.timing.duration_s:.1f} s clip", file=sys.stderr)
    return 0

