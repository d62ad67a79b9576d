"""Pure flag evaluation: compile a ruleset from plain data, evaluate in memory.

This module imports only the standard library and two small pure libraries,
mmh3 and google-re2 (``re2``), so the server, the Python client and the
benchmarks evaluate with exactly the same code. A test fails if it ever
imports Django.

The compiled ruleset holds prebuilt, immutable answers: an override hit, a
rule that serves one variation, and every arm of a split return an
``Evaluation`` built at compile time, so the hot path allocates nothing.

Evaluation order (one answer, one reason):

1. unknown or archived flag -> caller's default, ERROR / FLAG_NOT_FOUND
2. flag state disabled -> off variation, DISABLED, level ``off``
3. a live merchant override -> its variation, TARGETING_MATCH, ``override``
4. the first matching rule -> TARGETING_MATCH (SPLIT for a split), ``rule:<n>``
5. fallthrough -> STATIC (SPLIT for a split), level ``default``
6. any internal error -> caller's default, ERROR / GENERAL; never raises

A context string that is not valid Unicode (a lone surrogate) as the merchant
key, the ``bucket_by`` value or an attribute a clause compares answers the
caller's default, ERROR / INVALID_CONTEXT: it is never hashed or matched.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import mmh3
import re2

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


# -- regular expressions -------------------------------------------------------

# ``matches`` runs RE2, which matches in time linear in the text whatever the
# pattern (no backtracking: ``^(a+)+$`` is as cheap as ``^a+$``). It refuses
# what it cannot do in linear time (backreferences, look-around).
MAX_PATTERN_LENGTH = 1_000  # characters in one pattern
# The compiled program's size bounds the work per character of text: a short
# pattern such as ``.{1000}`` expands to thousands of instructions.
MAX_PATTERN_PROGRAM_SIZE = 2_000
_PATTERN_MAX_MEM = 1 << 20  # bytes of RE2 memory (program and DFA cache) each


def _pattern_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # refused patterns are reported, not logged
    options.max_mem = _PATTERN_MAX_MEM
    options.never_capture = True  # a clause asks "does it match", not where
    return options


_PATTERN_OPTIONS = _pattern_options()
# The wrapper's ``search`` decodes offsets and builds a match object (about
# 5 us a call); the binding's own ``Match`` on UTF-8 bytes answers the same
# question in under 1 us. Both come with the pinned google-re2.
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
_NO_MATCH = (-1, -1)


def _matcher(patterns: tuple[Any, ...]) -> Callable[[Any], bool]:
    """Return ``one(value)``: whether a string value matches any pattern."""
    matches = tuple(pattern._regexp.Match for pattern in patterns)

    def one(value):
        if not isinstance(value, str):
            return False
        text = value.encode()
        end = len(text)
        for match in matches:
            if match(_UNANCHORED, text, 0, end)[0] != _NO_MATCH:
                return True
        return False

    return one


def compile_pattern(pattern: Any, field: str = "pattern") -> Any:
    """Compile a ``matches`` pattern with RE2; return the compiled pattern.

    Raise ``RulesetError`` on ``field`` when the pattern is not a string, is
    longer than ``MAX_PATTERN_LENGTH`` characters, is not RE2 syntax, or
    compiles to more than ``MAX_PATTERN_PROGRAM_SIZE`` instructions.
    """
    if not isinstance(pattern, str):
        raise RulesetError(field, "a regular expression is a string")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise RulesetError(
            field,
            f"regular expression longer than {MAX_PATTERN_LENGTH} characters",
        )
    try:
        compiled = re2.compile(pattern, options=_PATTERN_OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else ""
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        raise RulesetError(
            field, f"bad regular expression (RE2 syntax): {detail}"
        ) from None
    except (TypeError, ValueError, UnicodeError):
        # e.g. a lone surrogate, which has no UTF-8 form
        raise RulesetError(field, "bad regular expression: not valid text") from None
    if compiled.programsize > MAX_PATTERN_PROGRAM_SIZE:
        raise RulesetError(
            field,
            f"regular expression too complex ({compiled.programsize} RE2 "
            f"instructions, at most {MAX_PATTERN_PROGRAM_SIZE})",
        )
    return compiled


def _hashable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


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


def _compile_clause(
    clause: Mapping[str, Any], segments: Mapping[str, tuple]
) -> Predicate:
    op = clause["op"]
    attribute = clause.get("attribute", "")
    values = list(clause.get("values", []))
    negate = bool(clause.get("negate", False))

    if op == "segment":
        members = tuple(segments[key] for key in values)

        def test_segment(context, ruleset):
            return any(
                all(pred(context, ruleset) for pred in preds) for preds in members
            )

        return (lambda c, r: not test_segment(c, r)) if negate else test_segment

    if op == "exists":

        def test_exists(context, ruleset):
            return (_attribute(context, ruleset, attribute) is not None) != negate

        return test_exists

    if op == "in":
        wanted = frozenset(value for value in values if not isinstance(value, bool))
        wanted_bools = tuple(value for value in values if isinstance(value, bool))

        def one(value):
            if isinstance(value, bool):
                return value in wanted_bools
            return _hashable(value) and value in wanted
    elif op in {"starts_with", "ends_with", "contains"}:
        method = {
            "starts_with": str.startswith,
            "ends_with": str.endswith,
            "contains": str.__contains__,
        }[op]
        strings = tuple(values)

        def one(value):
            return isinstance(value, str) and any(method(value, s) for s in strings)
    elif op == "matches":
        # Compiled once here, with the ruleset; never per evaluation.
        try:
            patterns = tuple(compile_pattern(value) for value in values)
        except RulesetError as exc:
            # Data written before RE2 (or not through the services): only
            # evaluations that test this clause answer ERROR; the rest of the
            # ruleset compiles and serves.
            refused = exc

            def one(value):
                raise refused
        else:
            one = _matcher(patterns)
    else:
        compare = {
            "lt": float.__lt__,
            "lte": float.__le__,
            "gt": float.__gt__,
            "gte": float.__ge__,
        }[op]
        numbers = tuple(float(value) for value in values)

        def one(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            return any(compare(float(value), n) for n in numbers)

    is_in = op == "in"

    def test(context, ruleset):
        value = context.get(attribute)
        if value is None:
            value = _attribute(context, ruleset, attribute)
            if value is None:
                return False  # a missing attribute matches nothing, negated or not
        if type(value) is str and value.isascii():
            if is_in:
                # The common case (tier in [gold]) answered with one set lookup.
                return (value in wanted) != negate
        else:
            # compared values never reach re (or any hash) unless valid text
            _refuse_unencodable(value, attribute)
            if is_in and type(value) is str:
                return (value in wanted) != negate
        if isinstance(value, list):
            matched = any(one(item) for item in value)
        else:
            matched = one(value)
        return matched != negate

    return test


def _compile_serve(
    serve: Mapping[str, Any],
    answers: Mapping[str, tuple[Any, str]],
    flag_key: str,
    level: str,
    single_reason: str,
    version: int,
) -> tuple[Evaluation | None, tuple[tuple[int, Evaluation], ...] | None]:
    if "variation" in serve:
        key = serve["variation"]
        value = answers[key][0]
        return Evaluation(flag_key, value, key, single_reason, level, version), None
    upper = 0
    arms = []
    for arm in serve["split"]:
        if arm["weight"] <= 0:
            continue
        upper += arm["weight"]
        key = arm["variation"]
        arms.append(
            (
                upper,
                Evaluation(
                    flag_key, answers[key][0], key, Reason.SPLIT, level, version
                ),
            )
        )
    if len(arms) == 1:
        # A 100% split is one variation; still reported as SPLIT, no hashing.
        return arms[0][1], None
    return None, tuple(arms)


def compile_flag(
    data: Mapping[str, Any], version: int, segments: Mapping[str, tuple]
) -> CompiledFlag:
    """Compile one flag's plain data (see ``ruleset_data`` in flags.mappers)."""
    key = data["key"]
    variations = tuple((v["key"], v["value"]) for v in data["variations"])
    answers = {vkey: (value, vkey) for vkey, value in variations}
    off_key = data["off_variation"]
    off_answer = Evaluation(
        key, answers[off_key][0], off_key, Reason.DISABLED, Level.OFF, version
    )
    overrides: dict[str, int] = {}
    expiry: dict[str, float] = {}
    override_answers = tuple(
        Evaluation(key, value, vkey, Reason.TARGETING_MATCH, Level.OVERRIDE, version)
        for vkey, value in variations
    )
    index_of = {vkey: index for index, (vkey, _) in enumerate(variations)}
    for override in data.get("overrides", ()):
        merchant = override["merchant"]
        overrides[merchant] = index_of[override["variation"]]
        if override.get("expires_at") is not None:
            expiry[merchant] = float(override["expires_at"])
    rules = []
    for index, rule in enumerate(data.get("rules", ())):
        answer, split = _compile_serve(
            rule["serve"],
            answers,
            key,
            Level.rule(index),
            Reason.TARGETING_MATCH,
            version,
        )
        predicates = tuple(
            _compile_clause(clause, segments) for clause in rule["clauses"]
        )
        rules.append(CompiledRule(predicates, answer, split))
    fall_answer, fall_split = _compile_serve(
        data["fallthrough"], answers, key, Level.DEFAULT, Reason.STATIC, version
    )
    bucket_by = data.get("bucket_by") or MERCHANT
    merchant_split = None
    if (
        not rules
        and bucket_by == MERCHANT
        and fall_split is not None
        and len(fall_split) == 2
    ):
        merchant_split = (fall_split[0][0], fall_split[0][1], fall_split[1][1])
    return CompiledFlag(
        key=key,
        value_type=data["value_type"],
        enabled=bool(data["enabled"]),
        off_answer=off_answer,
        overrides=overrides,
        override_expiry=expiry or None,
        rules=tuple(rules),
        fallthrough_answer=fall_answer,
        fallthrough_split=fall_split,
        bucket_prefix=f"{key}.",
        bucket_by=bucket_by,
        variations=variations,
        merchant_split=merchant_split,
        override_answers=override_answers,
    )


def compile_ruleset(data: Mapping[str, Any]) -> Ruleset:
    """Compile the plain data of one environment into a ``Ruleset``.

    ``data`` is JSON-shaped: ``{"environment", "version", "flags": [...],
    "segments": {key: {"clauses": [...]}}, "merchants": {key: {attrs}}}``.
    Archived flags are simply absent. Raises on malformed data; evaluation
    itself never raises.
    """
    version = int(data["version"])
    segments = {
        key: tuple(_compile_clause(clause, {}) for clause in segment.get("clauses", ()))
        for key, segment in (data.get("segments") or {}).items()
    }
    flags = {
        flag["key"]: compile_flag(flag, version, segments)
        for flag in data.get("flags", ())
    }
    return Ruleset(
        environment=str(data.get("environment", "")),
        version=version,
        flags=flags,
        merchants=_merchants(data.get("merchants") or {}),
        data=data,
        segments=segments,
    )


def _merchants(registry: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    """Return the registry's attributes by merchant key, sharing ``registry``.

    A million merchants are a million dicts: when every value already is a
    dict (the data from flags.mappers, where equal attribute sets are one
    shared dict), the mapping is used as it is instead of copied.
    """
    if type(registry) is dict and all(type(v) is dict for v in registry.values()):
        return registry
    return {key: dict(attrs or {}) for key, attrs in registry.items()}


EMPTY_RULESET = Ruleset(environment="", version=0, flags={})


# -- evaluation ---------------------------------------------------------------


def _error(
    ruleset: Ruleset, flag_key: Any, default: Any, code: str, message: str
) -> Evaluation:
    return Evaluation(
        str(flag_key),
        default,
        None,
        Reason.ERROR,
        Level.DEFAULT,
        getattr(ruleset, "version", 0),
        code,
        message,
    )


_hash = mmh3.hash


def _bucket_value(
    flag: CompiledFlag, context: Mapping[str, Any], ruleset: Ruleset
) -> str | None:
    if flag.bucket_by == MERCHANT:
        value = context.get(MERCHANT)
    else:
        value = _attribute(context, ruleset, flag.bucket_by)
    if value is None or isinstance(value, (dict, list)):
        return None
    value = value if type(value) is str else str(value)
    if not value.isascii() and _is_unencodable(value):
        raise _UnencodableText(flag.bucket_by)
    return value


def _pick(split: tuple[tuple[int, Evaluation], ...], point: int) -> Evaluation:
    for upper, answer in split:
        if point < upper:
            return answer
    return split[-1][1]


def evaluate(
    ruleset: Ruleset,
    flag_key: str,
    context: Mapping[str, Any],
    default: Any = None,
    *,
    value_type: str | None = None,
) -> Evaluation:
    """Return the answer for ``flag_key`` in ``context``; never raise.

    ``context["merchant"]`` is the merchant key; other keys are attributes
    (registry attributes of a known merchant fill in the ones not given).
    With ``value_type`` set, a flag of another type answers ERROR /
    TYPE_MISMATCH with ``default``.
    """
    try:
        flag = ruleset.flags.get(flag_key)
        if flag is None:
            return _error(
                ruleset,
                flag_key,
                default,
                ErrorCode.FLAG_NOT_FOUND,
                f"flag {flag_key!r} not found",
            )
        if value_type is not None and value_type != flag.value_type:
            return _error(
                ruleset,
                flag_key,
                default,
                ErrorCode.TYPE_MISMATCH,
                f"flag {flag_key!r} is {flag.value_type}, not {value_type}",
            )
        if type(context) is not dict and not isinstance(context, Mapping):
            return _error(
                ruleset,
                flag_key,
                default,
                ErrorCode.INVALID_CONTEXT,
                "context must be an object",
            )
        merchant = context.get(MERCHANT)
        if (
            type(merchant) is str
            and not merchant.isascii()
            and _is_unencodable(merchant)
        ):
            raise _UnencodableText(MERCHANT)
        if not flag.enabled:
            return flag.off_answer
        if merchant is not None:
            index = flag.overrides.get(merchant)
            if index is not None:
                expiry = flag.override_expiry
                if expiry is None or time.time() < expiry.get(merchant, math.inf):
                    return flag.override_answers[index]
            fast = flag.merchant_split
            if fast is not None and type(merchant) is str:
                # One hash and one comparison for the usual percentage rollout.
                if _hash(flag.bucket_prefix + merchant, 0, False) % BUCKETS < fast[0]:
                    return fast[1]
                return fast[2]
        if flag.rules:
            for rule in flag.rules:
                for predicate in rule.predicates:
                    if not predicate(context, ruleset):
                        break
                else:
                    if rule.answer is not None:
                        return rule.answer
                    value = _bucket_value(flag, context, ruleset)
                    if value is None:
                        return _error(
                            ruleset,
                            flag_key,
                            default,
                            ErrorCode.TARGETING_KEY_MISSING,
                            f"a split needs '{flag.bucket_by}' in the context",
                        )
                    return _pick(
                        rule.split,
                        _hash(flag.bucket_prefix + value, 0, False) % BUCKETS,
                    )
        answer = flag.fallthrough_answer
        if answer is not None:
            return answer
        if flag.bucket_by == MERCHANT and type(merchant) is str:
            value = merchant
        else:
            value = _bucket_value(flag, context, ruleset)
            if value is None:
                return _error(
                    ruleset,
                    flag_key,
                    default,
                    ErrorCode.TARGETING_KEY_MISSING,
                    f"a split needs '{flag.bucket_by}' in the context",
                )
        point = _hash(flag.bucket_prefix + value, 0, False) % BUCKETS
        for upper, answer in flag.fallthrough_split:
            if point < upper:
                return answer
        return answer
    except _UnencodableText as exc:
        return _error(
            ruleset,
            flag_key,
            default,
            ErrorCode.INVALID_CONTEXT,
            f"context attribute {exc.name!r} is not valid Unicode text"
            " (it contains a lone surrogate)",
        )
    except Exception as exc:  # the contract: never raise to the caller
        return _error(
            ruleset,
            flag_key,
            default,
            ErrorCode.GENERAL,
            f"evaluation failed: {type(exc).__name__}",
        )


def evaluate_all(ruleset: Ruleset, context: Mapping[str, Any]) -> list[Evaluation]:
    """Return answers for every flag in the ruleset, in key order."""
    return [evaluate(ruleset, key, context) for key in sorted(ruleset.flags)]
