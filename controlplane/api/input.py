"""Untrusted input: one place that decides what text and JSON are acceptable.

Every entry point (evaluation, OFREP, events, management API, admin forms,
commands) parses and checks what a caller sends with these functions, so the
rules are the same everywhere:

- text must be encodable as UTF-8: a lone surrogate (``"\\ud800"``, which
  JSON's ``\\u`` escapes can produce) is refused, since it cannot be stored,
  hashed or written back out;
- text that is stored must not contain NUL (PostgreSQL cannot store it);
- JSON must be finite (no ``NaN``, ``Infinity`` or ``1e999``) and nested at
  most ``MAX_JSON_DEPTH`` levels.

The functions raise ``UntrustedInput`` carrying the offending field path;
interfaces turn it into their own 400 (native, OFREP, form error).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deep enough for any real ruleset or context, shallow enough that no
# recursive walker (serializers, the engine, json.dumps) can hit the
# interpreter's recursion limit.
MAX_JSON_DEPTH = 64


class UntrustedInput(ValueError):
    """Input refused at the boundary; ``field`` is the path of the culprit."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


def text_problem(text: str, *, allow_nul: bool = True) -> str | None:
    """Return why ``text`` is unacceptable, or None when it is fine."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode text (it contains a lone surrogate)"
    if not allow_nul and "\x00" in text:
        return "must not contain a NUL character"
    return None


def check_text(text: str, *, field: str, allow_nul: bool = True) -> str:
    """Return ``text`` if acceptable; raise UntrustedInput otherwise."""
    problem = text_problem(text, allow_nul=allow_nul)
    if problem:
        raise UntrustedInput(problem, field=field)
    return text


def check_json_value(
    value: Any,
    *,
    field: str = "",
    max_depth: int = MAX_JSON_DEPTH,
    allow_nul: bool = True,
) -> Any:
    """Return ``value`` if every string, key and number in it is acceptable.

    Walks iteratively (no recursion, so a deep value cannot crash the walk)
    and raises UntrustedInput naming the first offending path: a string or
    key that is not valid Unicode (or holds NUL when ``allow_nul`` is off), a
    float that is not finite, or nesting deeper than ``max_depth``.
    """
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, field=path, allow_nul=allow_nul)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UntrustedInput("must be a finite number", field=path)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise UntrustedInput(
                    f"is nested more than {max_depth} levels deep", field=path
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    key_text = str(key)
                    check_text(key_text, field=path or "(key)", allow_nul=allow_nul)
                    child_path = f"{path}.{key_text}" if path else key_text
                    stack.append((child, child_path, depth + 1))
            else:
                for index, child in enumerate(item):
                    stack.append((child, f"{path}[{index}]", depth + 1))
    return value


class _NonFinite(ValueError):
    """A NaN, Infinity or overflowing number met while parsing."""


def _refuse_constant(name: str) -> float:
    raise _NonFinite(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NonFinite(f"{text[:20]} is out of range for a number")
    return number


# Built once: json.loads with hooks would build a decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _may_need_walk(raw: bytes | str, max_depth: int) -> bool:
    """Return False when ``raw`` cannot hold a bad string or too deep a value.

    An ASCII document can only produce a lone surrogate or NUL through a
    ``\\u`` escape (strict JSON refuses raw control characters; json decodes
    other bytes with ``surrogatepass``, so non-ASCII input is always walked),
    and one with at most ``max_depth`` brackets cannot nest deeper. These
    C-speed scans keep the walk off the hot path.
    """
    if not raw.isascii():
        return True
    if isinstance(raw, str):
        return "\\u" in raw or raw.count("{") + raw.count("[") > max_depth
    # find, not ``in``: bytes.__contains__ first tries its argument as an
    # integer (raising and clearing an exception), several times slower
    return raw.find(b"\\u") >= 0 or raw.count(b"{") + raw.count(b"[") > max_depth


def loads_json(
    raw: bytes | str,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    allow_nul: bool = True,
) -> Any:
    """Parse untrusted JSON; raise UntrustedInput for anything unacceptable.

    Refuses malformed JSON and invalid UTF-8, ``NaN``/``Infinity`` and
    numbers that overflow to infinity, integers of more than 4,300 digits
    (the interpreter's limit), nesting deeper than ``max_depth`` and strings
    that are not valid Unicode. A refusal names the offending field where
    the document parses (``flags[0].default``), and the message never
    echoes the input.
    """
    try:
        text = (
            raw.decode(json.detect_encoding(raw), "surrogatepass")
            if isinstance(raw, bytes | bytearray)
            else raw
        )
        value = _DECODER.decode(text)
    except RecursionError:
        raise UntrustedInput(
            f"is nested more than {max_depth} levels deep",
            field=deep_path(raw, max_depth=max_depth),
        ) from None
    except UnicodeDecodeError:
        raise UntrustedInput("malformed JSON: the body is not valid UTF-8") from None
    except _NonFinite as exc:
        # Rare: parse again keeping the non-finite number, to name its field.
        value = json.loads(raw, parse_constant=float)
        check_json_value(value, max_depth=max_depth, allow_nul=allow_nul)
        raise UntrustedInput(f"malformed JSON: {_short(exc)}") from None
    except ValueError as exc:
        raise UntrustedInput(f"malformed JSON: {_short(exc)}") from None
    if not _may_need_walk(raw, max_depth):
        return value
    return check_json_value(value, max_depth=max_depth, allow_nul=allow_nul)


def _short(exc: ValueError) -> str:
    # json's messages carry a position, never the document; other ValueErrors
    # (int digit limit, our own) are short. Cut anyway: nothing long echoes.
    return str(exc)[:200]


# A JSON string or one structural character; what lies between (numbers,
# literals, blanks) does not change the path.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{},:]')
_MAX_PATH_CHARS = 500


def deep_path(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> str:
    """Return the path of the first container of ``raw`` nested too deep.

    For a document too deep to parse at all (the parser's recursion limit):
    scans the text without recursion and names the container
    ``check_json_value`` would name (``rules[0].clauses[0]...``), cut to 500
    characters; "" when nothing in ``raw`` is nested that deep.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    # Each frame: [kind, index or key, expecting a key (objects only)].
    frames: list[list[Any]] = []
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            if len(frames) >= max_depth:
                return _frames_path(frames)[:_MAX_PATH_CHARS]
            frames.append(["[", 0, False] if token == "[" else ["{", "", True])
        elif not frames:
            continue
        elif token in ("]", "}"):
            frames.pop()
        elif token == ",":
            if frames[-1][0] == "[":
                frames[-1][1] += 1
            else:
                frames[-1][2] = True
        elif token == ":":
            frames[-1][2] = False
        elif frames[-1][0] == "{" and frames[-1][2]:
            try:
                frames[-1][1] = str(json.loads(token))
            except ValueError:
                frames[-1][1] = token[1:-1]
    return ""


def _frames_path(frames: list[list[Any]]) -> str:
    path = ""
    for kind, where, _ in frames:
        if kind == "[":
            path += f"[{where}]"
        else:
            path = f"{path}.{where}" if path else str(where)
    return path
