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
from collections.abc import Mapping
from typing import Any

import mmh3

from flags.engine_compile import (
    MAX_PATTERN_LENGTH,
    MAX_PATTERN_PROGRAM_SIZE,
    compile_flag,
    compile_pattern,
    compile_ruleset,
)
from flags.engine_model import (
    BUCKETS,
    EMPTY_RULESET,
    MERCHANT,
    VALUE_TYPES,
    CompiledFlag,
    CompiledRule,
    ErrorCode,
    Evaluation,
    Level,
    Reason,
    Ruleset,
    RulesetError,
    _attribute,
    _is_unencodable,
    _UnencodableText,
    bucket,
)

# The engine's whole interface, wherever each piece is defined.
__all__ = [
    "BUCKETS",
    "EMPTY_RULESET",
    "MAX_PATTERN_LENGTH",
    "MAX_PATTERN_PROGRAM_SIZE",
    "MERCHANT",
    "VALUE_TYPES",
    "CompiledFlag",
    "CompiledRule",
    "ErrorCode",
    "Evaluation",
    "Level",
    "Reason",
    "Ruleset",
    "RulesetError",
    "bucket",
    "compile_flag",
    "compile_pattern",
    "compile_ruleset",
    "evaluate",
    "evaluate_all",
]


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
