"""Encoded answer bodies, precomputed per ruleset.

A compiled ruleset holds its answers as shared ``engine.Evaluation``
objects (a flag's off answer, each rule's and split arm's answer), so the
JSON of one answer is the same for every merchant that gets it. This module
keeps those encodings per ruleset: a warm request joins cached bytes
instead of building and encoding dictionaries. Error answers are built per
request by the engine and are always encoded afresh.

A cache belongs to one ruleset object; a new version (or another source's
ruleset, as in a relay) starts a new cache, so nothing cached can outlive
the answers it was made from.
"""

from __future__ import annotations

from typing import Any

from flags import engine, ruleset_json
from flags.hotpath.codec import dumps

# Most cached fragments per ruleset (a registry of many per-merchant
# overrides has as many answers); past it, answers are encoded per request.
MAX_FRAGMENTS = 20_000


class RulesetBodies:
    """Cached encodings of one ruleset's answers."""

    __slots__ = ("ruleset", "native", "ofrep", "prefixes", "payload")

    def __init__(self, ruleset: engine.Ruleset) -> None:
        self.ruleset = ruleset
        # id(answer) -> (answer, bytes): the answer is kept so its id is
        # never reused while the entry lives
        self.native: dict[int, tuple[engine.Evaluation, bytes]] = {}
        self.ofrep: dict[tuple[int, bool], tuple[engine.Evaluation, bytes]] = {}
        self.prefixes: dict[bool, bytes] = {}
        self.payload: bytes | None = None


_by_environment: dict[str, RulesetBodies] = {}


def bodies_for(ruleset: engine.Ruleset) -> RulesetBodies:
    """Return the cache of ``ruleset`` (a new one when the ruleset changed)."""
    cached = _by_environment.get(ruleset.environment)
    if cached is not None and cached.ruleset is ruleset:
        return cached
    cached = RulesetBodies(ruleset)
    _by_environment[ruleset.environment] = cached
    return cached


def clear() -> None:
    """Forget every cached body (tests)."""
    _by_environment.clear()


# -- native ---------------------------------------------------------------------


def native_item(answer: engine.Evaluation) -> dict[str, Any]:
    """Return one answer of ``POST /api/v1/evaluate``."""
    item = {
        "key": answer.flag_key,
        "value": answer.value,
        "variation": answer.variation,
        "reason": answer.reason,
        "level": answer.level,
    }
    if answer.error_code is not None:
        item["error_code"] = answer.error_code
        item["error_message"] = answer.error_message
    return item


def native_fragment(cache: RulesetBodies, answer: engine.Evaluation) -> bytes:
    """Return the encoded native item of ``answer`` (cached unless an error)."""
    entry = cache.native.get(id(answer))
    if entry is not None and entry[0] is answer:
        return entry[1]
    fragment = dumps(native_item(answer))
    if answer.error_code is None and len(cache.native) < MAX_FRAGMENTS:
        cache.native[id(answer)] = (answer, fragment)
    return fragment


def native_prefix(cache: RulesetBodies, stale: bool) -> bytes:
    """Return ``{"environment":..,"version":..,"stale":..,"flags":[``."""
    prefix = cache.prefixes.get(stale)
    if prefix is None:
        ruleset = cache.ruleset
        head = dumps(
            {
                "environment": ruleset.environment,
                "version": ruleset.version,
                "stale": stale,
            }
        )
        prefix = head[:-1] + b',"flags":['
        cache.prefixes[stale] = prefix
    return prefix


def native_body(
    cache: RulesetBodies, stale: bool, answers: list[engine.Evaluation]
) -> bytes:
    """Return the whole native body of ``answers`` (the success shape)."""
    if len(answers) == 1:
        return native_prefix(cache, stale) + native_fragment(cache, answers[0]) + b"]}"
    return (
        native_prefix(cache, stale)
        + b",".join([native_fragment(cache, answer) for answer in answers])
        + b"]}"
    )


# -- OFREP ----------------------------------------------------------------------


def ofrep_success(
    answer: engine.Evaluation, ruleset: engine.Ruleset, stale: bool
) -> dict[str, Any]:
    """Return the OFREP success body of ``answer``."""
    return {
        "key": answer.flag_key,
        "value": answer.value,
        "reason": answer.reason,
        "variant": answer.variation,
        "metadata": {
            "level": answer.level,
            "version": ruleset.version,
            "environment": ruleset.environment,
            "stale": stale,
        },
    }


def ofrep_failure(answer: engine.Evaluation) -> dict[str, Any]:
    """Return the OFREP error body of an error answer."""
    return {
        "key": answer.flag_key,
        "errorCode": answer.error_code,
        "errorDetails": answer.error_message or "",
    }


def ofrep_fragment(
    cache: RulesetBodies, answer: engine.Evaluation, stale: bool
) -> bytes:
    """Return the encoded OFREP item of ``answer`` (success or failure)."""
    if answer.error_code is not None:
        return dumps(ofrep_failure(answer))
    key = (id(answer), stale)
    entry = cache.ofrep.get(key)
    if entry is not None and entry[0] is answer:
        return entry[1]
    fragment = dumps(ofrep_success(answer, cache.ruleset, stale))
    if len(cache.ofrep) < MAX_FRAGMENTS:
        cache.ofrep[key] = (answer, fragment)
    return fragment


# -- ruleset --------------------------------------------------------------------


def ruleset_payload(cache: RulesetBodies) -> bytes:
    """Return the ruleset's plain data as JSON (encoded once per version; a
    new version re-encodes only the flags that changed, flags.ruleset_json)."""
    payload = cache.payload
    if payload is None:
        payload = ruleset_json.serialized(cache.ruleset)
        cache.payload = payload
    return payload
