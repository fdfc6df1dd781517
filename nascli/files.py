"""Files written whole or not at all: a kill or a full disk mid-write leaves the previous file
(or none), never half of one, so whatever reads it later (a resume, a report) can trust it."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def written_whole(path):
    """Yields a temporary path beside `path` to write to; it replaces `path` (one rename) when the
    block ends without an error, and is removed when it does not."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
