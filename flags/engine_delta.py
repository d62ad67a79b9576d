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


def restamp_flag(flag: CompiledFlag, version: int) -> CompiledFlag:
    """Return ``flag`` with every prebuilt answer carrying ``version``.

    The per-merchant override map, the predicates and the buckets are shared
    with ``flag``: only the few prebuilt answers are new (an answer that
    appears twice, as in the merchant split and the fallthrough split, is
    rebuilt once).
    """
    if flag.off_answer.version == version:
        return flag
    made: dict[int, Evaluation] = {}

    def again(answer: Evaluation | None) -> Evaluation | None:
        if answer is None:
            return None
        new = made.get(id(answer))
        if new is None:
            new = made[id(answer)] = Evaluation(
                answer.flag_key,
                answer.value,
                answer.variation,
                answer.reason,
                answer.level,
                version,
                answer.error_code,
                answer.error_message,
            )
        return new

    def split_again(split):
        if split is None:
            return None
        return tuple([(upper, again(answer)) for upper, answer in split])

    merchant_split = flag.merchant_split
    if merchant_split is not None:
        upper, first, second = merchant_split
        merchant_split = (upper, again(first), again(second))
    return CompiledFlag(
        flag.key,
        flag.value_type,
        flag.enabled,
        again(flag.off_answer),
        flag.overrides,
        flag.override_expiry,
        tuple(
            [
                CompiledRule(
                    rule.predicates, again(rule.answer), split_again(rule.split)
                )
                for rule in flag.rules
            ]
        ),
        again(flag.fallthrough_answer),
        split_again(flag.fallthrough_split),
        flag.bucket_prefix,
        flag.bucket_by,
        flag.variations,
        merchant_split,
        tuple([again(answer) for answer in flag.override_answers]),
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
        if key in changed:
            flag_data = changed[key]
            if flag_data is not None:
                flags[key] = compile_flag(flag_data, version, segments)
        else:
            flags[key] = restamp_flag(flag, version)
    added = [key for key, entry in changed.items() if entry and key not in flags]
    for key in added:
        flags[key] = compile_flag(changed[key], version, segments)
    if added:
        flags = dict(sorted(flags.items()))
    data = ruleset.data
    if data is not None:
        # changed entries take their place; only new flags need a sort
        entries = [
            changed[entry["key"]] if entry["key"] in changed else entry
            for entry in data.get("flags", ())
        ]
        entries = [entry for entry in entries if entry is not None]
        if added:
            entries.extend(changed[key] for key in added)
            entries.sort(key=lambda entry: entry["key"])
        data = {**data, "version": version, "flags": entries}
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
