"""The ruleset's plain data as JSON bytes, built from cached pieces.

``serialized(ruleset)`` returns exactly
``json.dumps(ruleset.data, separators=(",", ":"), ensure_ascii=False)``
encoded as UTF-8, but a new version re-encodes only what changed: each flag
entry, the segments and the merchant registry are encoded once and kept
while the data holds the same object (flags.engine_delta.update_ruleset
shares every unchanged piece with the previous version). At a million
merchants the registry alone is ~60 MB of JSON; one flag change then costs
one flag's encoding and a join, not the registry's encoding.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping
from typing import Any

from flags.engine import Ruleset

_SHARED = ("merchants", "segments")  # large pieces kept across versions
_lock = threading.Lock()
# environment -> (the data object, its bytes)
_whole: dict[str, tuple[Mapping[str, Any], bytes]] = {}
# (environment, piece name) -> (the piece object, its bytes)
_pieces: dict[tuple[str, str], tuple[Any, bytes]] = {}
# (environment, flag key) -> (the flag entry object, its bytes)
_flags: dict[tuple[str, str], tuple[Any, bytes]] = {}


_CHUNK = 5_000  # registry entries encoded per call (a few ms each)


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _encode_large(value: Any) -> bytes:
    """Encode a large mapping in slices: other threads run in between.

    One ``json.dumps`` of a million entries holds the GIL for seconds, and
    an evaluation on another thread would wait that long.
    """
    if type(value) is not dict or len(value) <= _CHUNK:
        return _encode(value)
    items = iter(value.items())
    parts = []
    while chunk := dict(itertools.islice(items, _CHUNK)):
        parts.append(_encode(chunk)[1:-1])
    return b"{" + b",".join(parts) + b"}"


def serialized(ruleset: Ruleset) -> bytes:
    """Return the JSON bytes of ``ruleset.data`` (cached per version).

    Raise ValueError when the ruleset has no plain data.
    """
    data = ruleset.data
    if data is None:
        raise ValueError("this ruleset has no plain data")
    environment = ruleset.environment
    cached = _whole.get(environment)
    if cached is not None and cached[0] is data:
        return cached[1]
    with _lock:
        cached = _whole.get(environment)
        if cached is not None and cached[0] is data:
            return cached[1]
        payload = _build(environment, data)
        _whole[environment] = (data, payload)
    return payload


def _build(environment: str, data: Mapping[str, Any]) -> bytes:
    parts: list[bytes] = []
    for name, value in data.items():
        if name == "flags" and isinstance(value, list):
            encoded = b"[" + b",".join(_flag(environment, v) for v in value) + b"]"
        elif name in _SHARED:
            held = _pieces.get((environment, name))
            if held is None or held[0] is not value:
                held = (value, _encode_large(value))
                _pieces[(environment, name)] = held
            encoded = held[1]
        else:
            encoded = _encode(value)
        parts.append(_encode(name) + b":" + encoded)
    keys = {
        entry.get("key") for entry in data.get("flags") or () if type(entry) is dict
    }
    for cache_key in [k for k in _flags if k[0] == environment and k[1] not in keys]:
        del _flags[cache_key]  # flags gone from the ruleset
    return b"{" + b",".join(parts) + b"}"


def _flag(environment: str, entry: Any) -> bytes:
    if type(entry) is not dict or "key" not in entry:
        return _encode(entry)
    cache_key = (environment, entry["key"])
    held = _flags.get(cache_key)
    if held is None or held[0] is not entry:
        held = (entry, _encode(entry))
        _flags[cache_key] = held
    return held[1]


def clear() -> None:
    """Forget every cached piece (tests)."""
    with _lock:
        _whole.clear()
        _pieces.clear()
        _flags.clear()
