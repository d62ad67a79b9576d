"""A relay's files: JSON records replaced atomically, checked on read.

A record is written to a temporary file, fsync'd, renamed over the old one
and the directory fsync'd, so a crash leaves the old record or the new one,
never a torn one; a SHA-256 of the payload catches a file damaged anyway
(it is then ignored, as if absent). No Django, no database.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` survive a crash."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_record(path: Path, payload: Any) -> None:
    """Replace the record at ``path`` atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    body = json.dumps({"sha256": _digest(text), "payload": payload})
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def read_record(path: Path) -> Any | None:
    """Return the payload at ``path``; None when absent or damaged."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        payload = raw["payload"]
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        if raw["sha256"] != _digest(text):
            raise ValueError("checksum mismatch")
        return payload
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("relay: ignoring damaged record %s: %s", path, exc)
        return None
