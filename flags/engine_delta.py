"""Apply a change to a compiled ruleset without recompiling all of it.

Pure, like flags.engine (standard library only, no Django): the store
(flags.snapshot) calls ``update_ruleset`` when only some flags of an
environment changed, and a client or relay holding the plain data can do
the same. The answers are those ``compile_ruleset`` of the updated data
would give; only the changed flags are compiled, the others are shared as
they are. An answer's ``version`` is the ruleset version its flag was
compiled at (what serves an answer names the serving ruleset's version, as
OFREP's metadata does): restamping every unchanged flag cost more than the
rest of applying a change to a thousand flags (bench/scale.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flags.engine import (
    CompiledFlag,
    Ruleset,
    compile_flag,
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
    (archived). Every other flag keeps its compiled form as it is; segments and merchants are shared. The result answers
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
            flags[key] = flag
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
