"""Apply a change to a compiled ruleset without recompiling all of it.

Pure, like flags.engine (standard library only, no Django): the store
(flags.snapshot) calls ``update_ruleset`` when only some flags of an
environment changed, and a client or relay holding the plain data can do
the same. The answers are those ``compile_ruleset`` of the updated data
would give; only the changed flags are compiled, the others are restamped
with the new version (their few prebuilt answers carry it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flags.engine import (
    CompiledFlag,
    CompiledRule,
    Evaluation,
    Ruleset,
    compile_flag,
)


def _restamp_answer(answer: Evaluation | None, version: int) -> Evaluation | None:
    if answer is None or answer.version == version:
        return answer
    return Evaluation(
        answer.flag_key,
        answer.value,
        answer.variation,
        answer.reason,
        answer.level,
        version,
        answer.error_code,
        answer.error_message,
    )


def _restamp_split(
    split: tuple[tuple[int, Evaluation], ...] | None, version: int
) -> tuple[tuple[int, Evaluation], ...] | None:
    if split is None:
        return None
    return tuple((upper, _restamp_answer(answer, version)) for upper, answer in split)


def restamp_flag(flag: CompiledFlag, version: int) -> CompiledFlag:
    """Return ``flag`` with every prebuilt answer carrying ``version``.

    The per-merchant override map, the predicates and the buckets are shared
    with ``flag``: only the few prebuilt answers are new.
    """
    if flag.off_answer.version == version:
        return flag
    fallthrough_split = _restamp_split(flag.fallthrough_split, version)
    merchant_split = None
    if flag.merchant_split is not None:
        upper, first, second = flag.merchant_split
        merchant_split = (
            upper,
            _restamp_answer(first, version),
            _restamp_answer(second, version),
        )
    return CompiledFlag(
        key=flag.key,
        value_type=flag.value_type,
        enabled=flag.enabled,
        off_answer=_restamp_answer(flag.off_answer, version),
        overrides=flag.overrides,
        override_expiry=flag.override_expiry,
        rules=tuple(
            CompiledRule(
                rule.predicates,
                _restamp_answer(rule.answer, version),
                _restamp_split(rule.split, version),
            )
            for rule in flag.rules
        ),
        fallthrough_answer=_restamp_answer(flag.fallthrough_answer, version),
        fallthrough_split=fallthrough_split,
        bucket_prefix=flag.bucket_prefix,
        bucket_by=flag.bucket_by,
        variations=flag.variations,
        merchant_split=merchant_split,
        override_answers=tuple(
            _restamp_answer(answer, version) for answer in flag.override_answers
        ),
    )


def update_ruleset(
    ruleset: Ruleset,
    *,
    version: int,
    changed: Mapping[str, Mapping[str, Any] | None],
    generated_at: str | None = None,
) -> Ruleset:
    """Return ``ruleset`` at ``version`` with only the ``changed`` flags recompiled.

    ``changed`` maps a flag key to its new plain data (the shape of one entry
    of ``ruleset_data``'s ``flags``), or to None when the flag is gone
    (archived). Every other flag keeps its compiled form, restamped with
    ``version``; segments and merchants are shared. The result answers
    exactly as ``compile_ruleset`` of the updated data would.
    """
    segments = ruleset.segments
    flags: dict[str, CompiledFlag] = {}
    for key, flag in ruleset.flags.items():
        if key not in changed:
            flags[key] = restamp_flag(flag, version)
    for key, flag_data in changed.items():
        if flag_data is not None:
            flags[key] = compile_flag(flag_data, version, segments)
    flags = dict(sorted(flags.items())) if changed else flags
    data = ruleset.data
    if data is not None:
        kept = [entry for entry in data.get("flags", ()) if entry["key"] not in changed]
        kept.extend(entry for entry in changed.values() if entry is not None)
        kept.sort(key=lambda entry: entry["key"])
        data = {**data, "version": version, "flags": kept}
        if generated_at is not None:
            data["generated_at"] = generated_at
    return Ruleset(
        environment=ruleset.environment,
        version=version,
        flags=flags,
        merchants=ruleset.merchants,
        data=data,
        segments=segments,
    )
