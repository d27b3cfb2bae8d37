"""Files written whole or not at all: a reader (or a crash) never sees half of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int = 0o600, durable: bool = False
                     ) -> None:
    """Write `data` to `path` through a temporary file beside it, then rename it in place.

    `mode` is what the temporary file is created with, before the umask: 0o600 keeps service
    data private to its owner; 0o666 gives what any command's new file gets. `durable`:
    on disk (fsync) before the rename, for a file a database row is about to point at. A
    name of its own per call, so two writers of one path do not meet.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
