"""The last known good serving state, kept on local disk.

A serving process writes what it last loaded from the database (the
compiled rulesets' plain data, the active server keys as hashes) so that a
process started while the database is unreachable serves at once, from that
state, with every answer marked stale.

Each record is one JSON file, replaced atomically (temp file, fsync, rename,
fsync of the directory) and never by an older version; an HMAC (keyed by
SECRET_KEY) guards against a torn or edited file, which is then ignored.
Files live in ``SERVING_STATE_DIR`` (default ``VAR_DIR/serving``), in a
sub-directory per database, so two installations sharing a disk never serve
each other's state.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.conf import setting

log = logging.getLogger(__name__)

FORMAT = 1
FORMAT_ENCODED = 2  # a header line, then the payload's JSON bytes as written
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_cache_lock = threading.Lock()
# path -> ((mtime_ns, size), record): parse a file once, not per request
_read_cache: dict[str, tuple[tuple[int, int], LastGood | None]] = {}


@dataclass(frozen=True, slots=True)
class LastGood:
    """One record read back from disk."""

    version: int | str
    saved_at: str
    payload: Any


def state_dir(using: str = "default") -> Path:
    """Return the directory of ``using``'s records (not created)."""
    from django.conf import settings
    from django.db import connections

    base = setting("SERVING_STATE_DIR") or Path(settings.VAR_DIR) / "serving"
    db = connections[using].settings_dict
    source = "|".join(
        str(db.get(part) or "") for part in ("ENGINE", "HOST", "PORT", "NAME")
    )
    return Path(base) / hashlib.sha256(source.encode()).hexdigest()[:16]


def _path(name: str, using: str) -> Path:
    if not _SAFE_NAME.fullmatch(name):
        name = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
    return state_dir(using) / f"{name}.json"


def _checksum(version: int | str, payload_text: str) -> str:
    # keyed by SECRET_KEY: whoever can write the directory but not read the
    # settings cannot add a key hash or change a ruleset
    from django.utils.crypto import salted_hmac

    return salted_hmac(
        "controlplane.lastgood", f"{version}\n{payload_text}", algorithm="sha256"
    ).hexdigest()


def write(
    name: str,
    payload: Any,
    *,
    version: int | str,
    using: str = "default",
    newer_only: bool = False,
) -> bool:
    """Replace record ``name`` atomically; return False when it was kept.

    With ``newer_only`` (integer versions), a record on disk with a higher
    version stays: several processes share the directory, and one that
    loaded earlier must not put an older state back.
    """
    payload_text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    record = {
        "format": FORMAT,
        "name": name,
        "version": version,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(),
        "checksum": _checksum(version, payload_text),
        "payload": payload,
    }

    def dump(handle) -> None:
        handle.write(json.dumps(record, separators=(",", ":")).encode())

    return _replace(name, dump, version=version, using=using, newer_only=newer_only)


def write_encoded(
    name: str,
    payload: bytes,
    *,
    version: int | str,
    using: str = "default",
    newer_only: bool = False,
) -> bool:
    """Like ``write``, for a payload already encoded as JSON (UTF-8 bytes).

    Nothing is encoded again: a 100 MB ruleset whose JSON the server already
    holds goes to disk as it is, with a header line carrying the version and
    an HMAC of those exact bytes (format 2). ``read`` returns it parsed.
    """
    header = {
        "format": FORMAT_ENCODED,
        "name": name,
        "version": version,
        "saved_at": dt.datetime.now(dt.UTC).isoformat(),
        "checksum": _checksum_bytes(version, payload),
    }

    def dump(handle) -> None:
        handle.write(json.dumps(header, separators=(",", ":")).encode() + b"\n")
        handle.write(payload)

    return _replace(name, dump, version=version, using=using, newer_only=newer_only)


def _checksum_bytes(version: int | str, payload: bytes) -> str:
    from django.utils.crypto import salted_hmac

    mac = salted_hmac("controlplane.lastgood", f"{version}\n", algorithm="sha256")
    mac.update(payload)  # hashlib lets other threads run on large buffers
    return mac.hexdigest()


def _replace(name: str, dump, *, version, using: str, newer_only: bool) -> bool:
    path = _path(name, using)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(path.parent / ".lock", "a") as lock:
        # one writer at a time: the version comparison and the rename must
        # not interleave with another process's
        fcntl.flock(lock, fcntl.LOCK_EX)
        if newer_only and isinstance(version, int):
            current = _version_on_disk(path, name, using)
            if isinstance(current, int) and current > version:
                # only a valid record may keep its place (rare: read it whole)
                kept = read(name, using=using)
                if kept is not None and kept.version == current:
                    return False
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                dump(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except OSError:
                pass
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)
    return True


# The head of a record as ``write`` lays it out: the version comes before the
# (possibly 100 MB) payload, so comparing versions needs no parse of it.
_HEAD = re.compile(r'\{"format":\d+,"name":"(?:[^"\\]|\\.)*","version":(-?\d+)[,}]')


def _version_on_disk(path: Path, name: str, using: str) -> int | str | None:
    """Return the version of the record at ``path`` (None when absent)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return None
    match = _HEAD.match(head)
    if match is not None:
        return int(match.group(1))
    current = read(name, using=using)  # another layout: read it whole
    return current.version if current is not None else None


def exists(name: str, *, using: str = "default") -> bool:
    """Return True when a record ``name`` is on disk (not checked or read)."""
    return _path(name, using).exists()


def read(name: str, *, using: str = "default") -> LastGood | None:
    """Return record ``name``, or None when absent, torn or tampered with."""
    path = _path(name, using)
    try:
        stat = path.stat()
    except OSError:
        return None
    stamp = (stat.st_mtime_ns, stat.st_size)
    key = str(path)
    with _cache_lock:
        cached = _read_cache.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    record = _parse(path)
    with _cache_lock:
        _read_cache[key] = (stamp, record)
    return record


def _parse(path: Path) -> LastGood | None:
    try:
        content = path.read_bytes()
        if content.startswith(b'{"format":%d,' % FORMAT_ENCODED):
            head, _, payload = content.partition(b"\n")
            raw = json.loads(head)
            version = raw["version"]
            if raw.get("checksum") != _checksum_bytes(version, payload):
                raise ValueError("checksum mismatch")
            return LastGood(
                version=version,
                saved_at=str(raw["saved_at"]),
                payload=json.loads(payload),
            )
        raw = json.loads(content.decode("utf-8"))
        version, payload = raw["version"], raw["payload"]
        text = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        if raw.get("format") != FORMAT or raw.get("checksum") != _checksum(
            version, text
        ):
            raise ValueError("checksum mismatch")
        return LastGood(version=version, saved_at=str(raw["saved_at"]), payload=payload)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring last known good state %s: %s", path, exc)
        return None
