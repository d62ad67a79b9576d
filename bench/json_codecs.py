"""JSON codecs on the evaluation endpoints' real bodies: stdlib, orjson, msgspec.

Run: ``.venv/bin/python bench/json_codecs.py`` (no database, no Django
settings needed; a few seconds). Prints CPU nanoseconds per operation (the
least of ``--rounds`` rounds) for decoding the request bodies the endpoints
receive and encoding the answers they send, and checks that each codec
gives the standard library's values on these bodies.

- ``stdlib`` is what the API used before the hot path: ``json`` with the
  project's hooks (``controlplane.api.input.loads_json``: non-finite
  numbers refused) and a compact encoder with ``allow_nan=False``;
- ``orjson`` and ``msgspec`` are called plainly; ``hotpath`` is
  ``flags.hotpath.codec`` (the winner plus the checks that keep the
  standard library's refusals).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import msgspec  # noqa: E402
import orjson  # noqa: E402

REQUESTS: dict[str, bytes] = {
    "native, 1 flag": b'{"context": {"merchant": "m-42"}, "flags": ["bench-05"]}',
    "native, attributes": json.dumps(
        {
            "context": {
                "merchant": "m-42",
                "tier": "gold",
                "country": "KR",
                "plan": ["pro", "annual"],
            },
            "flags": [{"key": "checkout_theme", "type": "string", "default": "x"}],
        }
    ).encode(),
    "OFREP context": b'{"context": {"targetingKey": "m-42"}}',
}


def _answers(flags: int) -> dict[str, Any]:
    return {
        "flags": [
            {
                "key": f"bench-{n:02d}",
                "value": n % 2 == 0,
                "reason": "SPLIT",
                "variant": "on" if n % 2 == 0 else "off",
                "metadata": {
                    "level": "default",
                    "version": 1234,
                    "environment": "bench",
                    "stale": False,
                },
            }
            for n in range(flags)
        ]
    }


ANSWERS: dict[str, Any] = {
    "native, 1 flag": {
        "environment": "bench",
        "version": 1234,
        "stale": False,
        "flags": [
            {
                "key": "bench-05",
                "value": True,
                "variation": "on",
                "reason": "SPLIT",
                "level": "default",
            }
        ],
    },
    "OFREP single": _answers(1)["flags"][0],
    "OFREP bulk, 20 flags": _answers(20),
    "json value": {
        "key": "checkout_layout",
        "value": {"columns": 2, "sidebar": True, "name": "caf\u00e9"},
    },
}


def _decoders() -> dict[str, Callable[[bytes], Any]]:
    from controlplane.api.input import loads_json
    from flags.hotpath.codec import loads

    return {
        "stdlib": loads_json,
        "orjson": orjson.loads,
        "msgspec": msgspec.json.Decoder().decode,
        "hotpath": loads,
    }


def _encoders() -> dict[str, Callable[[Any], bytes]]:
    from flags.hotpath.codec import dumps

    stdlib = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode
    return {
        "stdlib": lambda value: stdlib(value).encode(),
        "orjson": orjson.dumps,
        "msgspec": msgspec.json.Encoder().encode,
        "hotpath": dumps,
    }


def _ns_per_op(function: Callable[[Any], Any], argument: Any, rounds: int) -> float:
    # the least of the rounds: other processes' load only ever adds time
    loops = 20_000
    timings = []
    for _ in range(rounds):
        started = time.thread_time_ns()
        for _ in range(loops):
            function(argument)
        timings.append((time.thread_time_ns() - started) / loops)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    decoders, encoders = _decoders(), _encoders()
    names = list(decoders)
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  Python "
        f"{sys.version.split()[0]}, orjson {orjson.__version__}, msgspec "
        f"{msgspec.__version__}; CPU ns per operation, least of {args.rounds} rounds"
    )
    print(f"\n{'decode (request body)':28}" + "".join(f"{n:>10}" for n in names))
    for label, raw in REQUESTS.items():
        expected = json.loads(raw)
        for name, decode in decoders.items():
            assert decode(raw) == expected, (name, label)
        row = [_ns_per_op(decode, raw, args.rounds) for decode in decoders.values()]
        print(f"{label:28}" + "".join(f"{ns:10.0f}" for ns in row))
    print(f"\n{'encode (answer)':28}" + "".join(f"{n:>10}" for n in names))
    for label, value in ANSWERS.items():
        for name, encode in encoders.items():
            assert json.loads(encode(value)) == value, (name, label)
        row = [_ns_per_op(encode, value, args.rounds) for encode in encoders.values()]
        print(f"{label:28}" + "".join(f"{ns:10.0f}" for ns in row))


if __name__ == "__main__":
    main()
