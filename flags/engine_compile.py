"""Compile a ruleset from plain data: clauses, serves, flags, RE2 patterns.

Pure (the standard library and google-re2, ``re2``). ``flags.engine``
re-exports ``compile_ruleset``, ``compile_flag`` and ``compile_pattern``;
what is compiled here (predicates, prebuilt answers) is what
``flags.engine.evaluate`` runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import re2

from flags.engine_model import (
    MERCHANT,
    CompiledFlag,
    CompiledRule,
    Evaluation,
    Level,
    Predicate,
    Reason,
    Ruleset,
    RulesetError,
    _attribute,
    _refuse_unencodable,
)

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
