"""Loading diffusers pipelines from the Hugging Face Hub or a folder, with one-line errors."""

from __future__ import annotations

import json
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import diffusers
import torch
import transformers
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub import utils as hub_utils

from core.errors import ConfigError, ModelMissingError
from core.models.quiet import download_problem, first_line, held_logs
from core.sound_backends import SOUND_BACKENDS

logger = logging.getLogger(__name__)

_FIX = ("set [models] sound_model to a local diffusers folder, or run with SONIFY_MODELS=tiny "
        "(random test models: noise only)")
# diffusers' deprecated pipelines (AudioLDM) announce it on every construction; one line per
# start-up that says nothing the README does not: kept out of the log (DEBUG).
_CHATTER = ("has been deprecated and will not receive bug fixes",)


def hub_is_offline() -> bool:
    # Recent huggingface_hub releases answer through is_offline_mode(); older ones only
    # have the HF_HUB_OFFLINE constant.
    check = getattr(hub_constants, "is_offline_mode", None)
    return bool(check() if callable(check) else hub_constants.HF_HUB_OFFLINE)


# With one of these set the Hub may well be reachable through a proxy though not directly.
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
                    "all_proxy")


def go_offline_without_network(timeout_s: float = 5.0) -> None:
    """Without a route to the Hub, load from the local cache only.

    Otherwise each missing file costs huggingface_hub's five retries with back-off (about
    20 s a file, minutes in all) before the one-line "cannot be fetched" error; cached
    weights load the same either way.
    """
    if hub_is_offline() or any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return
    endpoint = urlsplit(hub_constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=timeout_s).close()
    except OSError as exc:
        logger.debug("%s cannot be reached (%s): loading models from the local cache only",
                     endpoint.hostname, exc.strerror or type(exc).__name__)
        hub_constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"  # for libraries that read the variable themselves


def _fix_for(backend: str, source: str) -> str:
    entry = SOUND_BACKENDS[backend]
    if entry.gated:
        repo = source if is_hub_id(source) else entry.default_model
        # Stability publishes these in its own layout: one conversion gives a diffusers folder.
        return (f"accept the licence at https://huggingface.co/{repo} and set HF_TOKEN, convert "
                "the checkpoint into a diffusers folder (README: Models) and point [models] "
                "sound_model at it, or run with SONIFY_MODELS=tiny (random test models: "
                "noise only)")
    return _FIX


def is_hub_id(source: str) -> bool:
    """A Hugging Face Hub id ("owner/name"), not a local folder."""
    path = Path(source).expanduser()
    return not (path.is_dir() or source.startswith((".", "/", "~")) or source.count("/") > 1)


def offline_and_not_cached(repo: str, filename: str, cache_dir: str | None) -> bool:
    """Downloads are off (HF_HUB_OFFLINE) and `filename` of `repo` is not in the cache."""
    return hub_is_offline() and not isinstance(
        try_to_load_from_cache(repo, filename, cache_dir=cache_dir), str)


def why_not_loaded(exc: BaseException, local: bool) -> str:
    """The phrase for a model that failed to load: the download's problem, else the error."""
    problem = None if local else download_problem(exc)
    return problem or f"could not be loaded ({type(exc).__name__}: {first_line(exc)})"


def missing_model_error(backend: str, source: str, why: str) -> ModelMissingError:
    """The one-line start-up error for a sound model that cannot be loaded."""
    return ModelMissingError(f"Sound model {source!r} {why}: {_fix_for(backend, source)}")


def _not_a_pipeline(exc: BaseException) -> bool:
    """True when the Hub answered but the repository holds no diffusers pipeline."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if "EntryNotFound" in type(cur).__name__ and "model_index.json" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


@contextmanager
def quiet_construction() -> Iterator[None]:
    """Keep library deprecation chatter out of the log while a pipeline is built or loaded.

    Covers diffusers' "AudioLDMPipeline has been deprecated" (a logger warning on every
    construction) and torch's weight_norm FutureWarning (AutoencoderSAME builds with it).
    """
    with held_logs("diffusers", drop=_CHATTER), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*weight_norm.* is deprecated",
                                category=FutureWarning)
        yield


def load_diffusers_pipeline(backend: str, source: str, *, dtype: torch.dtype,
                            cache_dir: str | None = None) -> Any:
    """`from_pretrained` a hub id (from the cache when offline) or a local diffusers folder.

    Raises `ModelMissingError` (one line, with the fix) when the weights are not available:
    missing, gated, or not a diffusers pipeline.
    """
    cls = getattr(diffusers, SOUND_BACKENDS[backend].pipeline_class)
    path = Path(source).expanduser()
    local = not is_hub_id(source)
    if local:
        index = path / "model_index.json"
        if not index.is_file():
            raise missing_model_error(
                backend, source, "is not a diffusers pipeline folder (no model_index.json)")
        found = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
        if found != cls.__name__:
            raise ConfigError(f"[models] sound_model: {source} holds a {found}, but "
                              f"sound_backend = {backend!r} needs a {cls.__name__}")
        source = str(path)
    elif offline_and_not_cached(source, "model_index.json", cache_dir):
        raise missing_model_error(backend, source, "is not in the Hugging Face cache and "
                                                   "cannot be fetched (HF_HUB_OFFLINE, or no "
                                                   "network)")
    try:
        # On a failed load diffusers first warns that it cannot reach the Hub, in two lines.
        with held_logs("diffusers", "transformers", "huggingface_hub", drop=_CHATTER), \
                quiet_construction():
            return cls.from_pretrained(source, dtype=dtype, cache_dir=cache_dir)
    except Exception as exc:  # whatever the libraries raise, the user gets one line
        logger.debug("loading %s failed", source, exc_info=True)
        if not local and _not_a_pipeline(exc):
            raise missing_model_error(backend, source, "is on the Hub but not as a diffusers "
                                                       "pipeline (no model_index.json)") from None
        raise missing_model_error(backend, source, why_not_loaded(exc, local)) from None


def disable_progress_bars() -> None:
    """Turn off diffusers' and transformers' loading bars (process-wide); keep download bars.

    Loading bars (one per component, every start) are for notebooks: a bot's log must stay
    readable. The Hub's download bars stay: a first real run fetches gigabytes and should
    show it. transformers switches those off along with its own, so they are switched back.
    """
    downloads_shown = not hub_utils.are_progress_bars_disabled()
    diffusers.utils.logging.disable_progress_bar()
    with warnings.catch_warnings():  # HF_HUB_DISABLE_PROGRESS_BARS=0 makes the hub warn here
        warnings.simplefilter("ignore")
        transformers.utils.logging.disable_progress_bar()
    if downloads_shown and hub_utils.are_progress_bars_disabled():
        hub_utils.enable_progress_bars()
