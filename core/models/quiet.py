"""Loading models quietly: one-line errors and held library logs.

Model libraries (open_clip, diffusers, transformers, huggingface_hub) explain a failed
load in many lines and several loggers; the user should get one line that says what is
missing and how to fix it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

logger = logging.getLogger(__name__)


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's text, cut at a word boundary: fit for a one-line error."""
    lines = str(exc).strip().splitlines()
    line = lines[0].strip() if lines else type(exc).__name__
    if len(line) <= limit:
        return line
    return line[:limit].rsplit(" ", 1)[0].rstrip(" ,;:(") + " ..."


def download_problem(exc: BaseException) -> str | None:
    """Why a hub download failed, as a phrase for the one-line error; None if it is no download.

    Hub, HTTP and OS errors anywhere in the chain count: they are what a missing network,
    HF_HUB_OFFLINE or a wrong repository name end in, whatever the library wraps them in.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    found = False
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        name = type(cur).__name__
        if name == "GatedRepoError":
            return "is gated on the Hugging Face Hub (its licence must be accepted there)"
        if name in ("RepositoryNotFoundError", "RevisionNotFoundError"):
            return "is not on the Hugging Face Hub, or needs a login there (check the name)"
        module = type(cur).__module__ or ""
        if module.startswith(("huggingface_hub", "requests", "httpx", "httpcore", "urllib3")) \
                or isinstance(cur, (OSError, ConnectionError, TimeoutError)):
            found = True
        cur = cur.__cause__ or cur.__context__
    return "is not downloaded and cannot be fetched (offline or no network)" if found else None


class _Hold(logging.Filter):
    """Keeps the records of a logger (optionally only those logged from `paths`) for later."""

    def __init__(self, paths: tuple[str, ...], names: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.paths = paths
        self.names = names  # when set: only records of these loggers (and their children)
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if self.paths and not any(p in record.pathname for p in self.paths):
            return True
        if self.names and not any(record.name == n or record.name.startswith(n + ".")
                                  for n in self.names):
            return True
        self.records.append(record)
        return False


@contextlib.contextmanager
def held_logs(*libraries: str, root_paths: tuple[str, ...] = (),
              drop: tuple[str, ...] = ()) -> Iterator[None]:
    """Hold what model libraries log while a model loads; replay warnings only if it loads.

    A failed load ends in our one-line ModelMissingError, and the libraries' own lines would
    only repeat it in longer words (open_clip logs a failed download at ERROR, diffusers warns
    that it cannot reach the Hub): those go to our DEBUG log. INFO chatter always does.
    `libraries` are top-level logger names ("diffusers"); `root_paths` picks the records logged
    straight to the root logger (open_clip does that) from files whose path holds one of them.
    Records whose message holds one of `drop` (known chatter) go to DEBUG even after a load.
    """
    held = _Hold(())
    targets: list[logging.Filterer] = []
    for name in libraries:
        library_logger = logging.getLogger(name)
        # diffusers and transformers log through their own handler on the top logger
        # (propagation off), so a filter on it sees every module's records.
        targets += [library_logger, *library_logger.handlers]
    # huggingface_hub has a handler of its own *and* propagates (each retry warning came out
    # twice): its records are also held at the root logger's handlers, by logger name.
    propagating = tuple(name for name in libraries if logging.getLogger(name).propagate)
    by_name = _Hold((), propagating)
    root_handlers = list(logging.getLogger().handlers) if propagating else []
    from_root = _Hold(root_paths)
    for target in targets:
        target.addFilter(held)
    for handler in root_handlers:
        handler.addFilter(by_name)
    if root_paths:
        logging.getLogger().addFilter(from_root)
    loaded = False
    try:
        yield
        loaded = True
    finally:
        for target in targets:
            target.removeFilter(held)
        for handler in root_handlers:
            handler.removeFilter(by_name)
        logging.getLogger().removeFilter(from_root)
        records = {id(r): r for r in held.records + by_name.records + from_root.records}
        for record in records.values():
            if loaded and record.levelno >= logging.WARNING and not any(
                    text in record.getMessage() for text in drop):
                logging.getLogger(record.name).handle(record)
            else:
                logger.debug("%s: %s", record.name, record.getMessage())
