"""Atomic file writes: a reader (or a crash) never sees half a file.

Used by every writer of durable artefacts (the image archive, the feature store, the data tree
the retraining loop extends), so a failed write leaves no partial or temporary file behind for
DVC or a data set reader to pick up.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(
    target: str | Path, write: Callable[[BinaryIO], object], mode: int = 0o644
) -> Path:
    """Write ``target`` through ``write(handle)`` into a hidden temporary file, then rename it.

    The temporary file lives in the target's folder (a rename is only atomic within one file
    system), starts with a dot (data set readers and DVC's ignore rules skip dot-files anyway),
    is flushed to disk before the rename, and is removed if anything fails.

    Args:
        target: Final path; its folder is created if needed.
        write: Writes the content to the open binary handle.
        mode: Permissions of the final file (``mkstemp`` would leave 0600).

    Returns:
        ``target`` as a Path.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target
