"""The engine's data: answers, reasons, the compiled ruleset, bucketing.

Pure (the standard library and mmh3), shared by ``flags.engine`` (which
evaluates and re-exports these names) and ``flags.engine_compile``. The
guard against text that is not valid Unicode lives here too: compiling
refuses it in a ruleset, evaluating answers INVALID_CONTEXT for it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mmh3

BUCKETS = 100_000
MERCHANT = "merchant"
VALUE_TYPES = ("bool", "string", "number", "json")


class Reason:
    STATIC = "STATIC"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DISABLED = "DISABLED"
    ERROR = "ERROR"


class ErrorCode:
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


class Level:
    OVERRIDE = "override"
    DEFAULT = "default"
    OFF = "off"

    @staticmethod
    def rule(index: int) -> str:
        """Return the level of the rule at 0-based ``index`` (``rule:1`` first)."""
        return f"rule:{index + 1}"


class RulesetError(ValueError):
    """Invalid ruleset data; ``field`` names where (dotted path)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One answer: the value and why it was served."""

    flag_key: str
    value: Any
    variation: str | None
    reason: str
    level: str
    # the ruleset version this flag was compiled at (a change to other flags
    # leaves it as it was: flags.engine_delta)
    version: int
    error_code: str | None = None
    error_message: str | None = None

    @property
    def is_error(self) -> bool:
        return self.error_code is not None


# -- bucketing -----------------------------------------------------------------


def bucket(flag_key: str, bucket_value: str) -> int:
    """Return a stable bucket in [0, 100_000) for this flag and value.

    ``mmh3.hash(f"{flag_key}.{bucket_value}", seed=0, signed=False) % 100_000``:
    the same in every process and language that implements MurmurHash3 x86_32.
    """
    return mmh3.hash(f"{flag_key}.{bucket_value}", 0, False) % BUCKETS


# -- compiled form ------------------------------------------------------------

Predicate = Callable[[Mapping[str, Any], Any], bool]


@dataclass(frozen=True, slots=True)
class CompiledRule:
    predicates: tuple[Predicate, ...]
    answer: Evaluation | None  # a single variation
    split: tuple[tuple[int, Evaluation], ...] | None  # (upper bound, answer)


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    key: str
    value_type: str
    enabled: bool
    off_answer: Evaluation
    # merchant key -> index into ``override_answers`` (the variation's index):
    # one prebuilt answer per variation, shared by every overridden merchant.
    overrides: Mapping[str, int]
    override_expiry: Mapping[str, float] | None  # merchant -> epoch seconds
    rules: tuple[CompiledRule, ...]
    fallthrough_answer: Evaluation | None
    fallthrough_split: tuple[tuple[int, Evaluation], ...] | None
    bucket_prefix: str
    bucket_by: str
    variations: tuple[tuple[str, Any], ...]
    # The common rollout shape, no rules and a two-arm split on the merchant
    # key, as (first arm's upper bound, first answer, second answer).
    merchant_split: tuple[int, Evaluation, Evaluation] | None = None
    # One TARGETING_MATCH / override answer per variation, in their order.
    override_answers: tuple[Evaluation, ...] = ()


@dataclass(frozen=True, slots=True)
class Ruleset:
    """Everything needed to evaluate one environment, in memory."""

    environment: str
    version: int
    flags: Mapping[str, CompiledFlag]
    merchants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    data: Mapping[str, Any] | None = None  # the plain data it was compiled from
    # compiled segments, kept so that one flag can be recompiled alone
    segments: Mapping[str, tuple] = field(default_factory=dict)


def _attribute(context: Mapping[str, Any], ruleset: Ruleset, name: str) -> Any:
    """Return a context attribute; fall back to the merchant registry."""
    value = context.get(name)
    if value is None:
        merchant = context.get(MERCHANT)
        if merchant is not None:
            registered = ruleset.merchants.get(merchant)
            if registered is not None:
                value = registered.get(name)
    return value


class _UnencodableText(Exception):
    """A context string that is not valid Unicode; ``name`` is its attribute."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _is_unencodable(text: str) -> bool:
    """Return True for text holding a lone surrogate (not valid Unicode).

    Such text must never reach mmh3 (which crashes the process on it) or re.
    The interfaces refuse it first (controlplane/api/input.py); this guard is
    the engine's own, since the client feeds it whatever its caller passes.
    """
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _refuse_unencodable(value: Any, name: str) -> None:
    """Raise _UnencodableText if ``value`` (or an item of a list) is bad text."""
    if isinstance(value, str):
        if not value.isascii() and _is_unencodable(value):
            raise _UnencodableText(name)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and not item.isascii() and _is_unencodable(item):
                raise _UnencodableText(name)


EMPTY_RULESET = Ruleset(environment="", version=0, flags={})
