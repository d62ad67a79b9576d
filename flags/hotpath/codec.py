"""JSON for the evaluation endpoints: msgspec when it agrees, else stdlib.

``bench/json_codecs.py`` measured the standard library, orjson and msgspec
on the endpoints' real bodies; msgspec decodes and encodes fastest and, on
success, gives exactly what ``json`` gives (duplicate keys: the last wins,
big integers stay integers, ``-0`` is ``0``). orjson was close but turns
integers over 64 bits into floats, which would change a caller's default.

Exact error behaviour stays the standard library's: whenever msgspec refuses
a document (malformed, ``NaN``, ``1e999``, a lone surrogate, raw surrogate
bytes, a byte order mark, nesting past its limit) the document is parsed
again by ``controlplane.api.input.loads_json``, whose refusal (and field
path) is the answer. Bodies longer than ``FAST_MAX_BYTES`` go to the
standard library too, so its 4,300-digit integer limit still applies.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from controlplane.api.input import MAX_JSON_DEPTH, loads_json
from controlplane.api.input import check_json_value as _check

# An integer over 4,300 digits needs a longer body than this.
FAST_MAX_BYTES = 4096

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
# allow_nan=False: an answer is always valid JSON, never Infinity or NaN.
_stdlib_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def loads(raw: bytes) -> Any:
    """Parse untrusted JSON as ``loads_json`` does; raise UntrustedInput.

    Same values and same refusals (with their field paths) as
    ``controlplane.api.input.loads_json``; only faster when the body is
    short and well formed.
    """
    if len(raw) <= FAST_MAX_BYTES:
        try:
            value = _decode(raw)
        except Exception:  # refused: let the standard library say why
            return loads_json(raw)
        # _may_need_walk's test, and a body shorter than the depth limit
        # cannot nest deeper than it (find, not ``in``: bytes.__contains__
        # first tries its argument as an integer, raising and clearing an
        # exception, several times slower)
        if (
            raw.isascii()
            and raw.find(b"\\u") < 0
            and (
                len(raw) <= MAX_JSON_DEPTH
                or raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH
            )
        ):
            return value
        return _check(value, max_depth=MAX_JSON_DEPTH)
    return loads_json(raw)


def dumps(value: Any) -> bytes:
    """Return ``value`` as compact UTF-8 JSON.

    Answers hold only values already checked finite (request input and
    stored variations), so msgspec's writing of a non-finite float as
    ``null`` never applies.
    """
    try:
        return _encode(value)
    except Exception:  # what msgspec cannot encode, json may (or says why)
        return _stdlib_encode(value).encode()
