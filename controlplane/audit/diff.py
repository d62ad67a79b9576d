"""What an audit event changed, as rows: field, before, after.

Services record ``before`` and ``after`` as JSON snapshots of the target
(``{"enabled": true, "fallthrough": {"split": [...]}, ...}``) and sometimes
pairs inside ``details`` (``{"from": "running", "to": "paused"}``). This
module turns them into flat rows a person can read (``fallthrough.split[0]
.weight: 10000 → 50000``), leaving out what did not change.

Pure: standard library only, no Django, no database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

Path = tuple[str | int, ...]

# Nesting deeper than this is shown as one value: audit data is written by
# services, but a merchant's attributes can be as deep as a caller sent them.
MAX_DEPTH: Final = 12
# Key pairs inside ``details`` that say what a value was and became.
PAIRS: Final = (("before", "after"), ("from", "to"))
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class _Missing:
    """The value of a field on the side where it does not exist."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


@dataclass(frozen=True, slots=True)
class Change:
    """One field that differs: its path and its two values.

    ``before`` is MISSING for a field that was added, ``after`` for one that
    was removed.
    """

    path: Path
    before: Any
    after: Any

    @property
    def field(self) -> str:
        """Return the path as text: ``rules[0].clauses[1].values``."""
        return path_text(self.path)

    @property
    def kind(self) -> str:
        """Return ``added``, ``removed`` or ``changed``."""
        if self.before is MISSING:
            return "added"
        if self.after is MISSING:
            return "removed"
        return "changed"


def path_text(path: Path) -> str:
    """Return ``path`` as text; keys that are not identifiers are quoted."""
    if not path:
        return "value"
    parts: list[str] = []
    for step in path:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif _PLAIN_KEY.match(step):
            parts.append(f".{step}" if parts else step)
        else:
            parts.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(parts)


def _is_empty_container(value: Any) -> bool:
    return isinstance(value, dict | list) and not value


def _is_container(value: Any) -> bool:
    return isinstance(value, dict | list) and bool(value)


def _leaves(value: Any, path: Path, depth: int) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict) and value and depth < MAX_DEPTH:
        for key, child in value.items():
            yield from _leaves(child, (*path, str(key)), depth + 1)
    elif (
        isinstance(value, list)
        and depth < MAX_DEPTH
        and any(_is_container(item) for item in value)
    ):
        # A list of objects (rules, split entries) is compared item by
        # item; a list of plain values (tags, merchant keys) is one value.
        for index, child in enumerate(value):
            yield from _leaves(child, (*path, index), depth + 1)
    else:
        yield path, value


def flatten(value: Any) -> dict[Path, Any]:
    """Return the leaves of ``value`` keyed by their path.

    Dicts are walked key by key, lists holding dicts or lists item by item;
    everything else (numbers, text, lists of plain values, empty containers)
    is a leaf. Below MAX_DEPTH a value is a leaf whatever it holds.
    """
    return dict(_leaves(value, (), 0))


def _order(path: Path) -> tuple:
    # ints and strs do not compare: rank each step by its type first.
    return tuple(
        (0, step, "") if isinstance(step, int) else (1, 0, step) for step in path
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same(left: Any, right: Any) -> bool:
    # True == 1 in Python, but not in JSON: a value going from 1 to true
    # changed. 1 and 1.0 are one number (a JSON column may read either).
    if _is_number(left) and _is_number(right):
        return left == right
    return type(left) is type(right) and left == right


def diff(before: Any, after: Any) -> list[Change]:
    """Return the fields that differ between two snapshots, sorted by path.

    ``None`` on one side means the target did not exist then (created or
    removed): every field of the other side is a change. Two equal values
    give no row, and neither does an empty container on one side whose
    fields fill the other (``rules: []`` becoming ``rules[0].…``).
    """
    old = {} if before is None else flatten(before)
    new = {} if after is None else flatten(after)
    paths = sorted(old.keys() | new.keys(), key=_order)
    # An empty container that became (or was) a full one: its fields' rows
    # say what happened, a "rules: [] → —" row beside them would not.
    parents = {path[:depth] for path in paths for depth in range(len(path))}
    changes = []
    for path in paths:
        left, right = old.get(path, MISSING), new.get(path, MISSING)
        if _same(left, right):
            continue
        present = right if left is MISSING else left if right is MISSING else None
        if path in parents and _is_empty_container(present):
            continue
        changes.append(Change(path, left, right))
    return changes


def _pairs(value: Any, path: Path, depth: int) -> Iterator[Change]:
    if depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        for old_key, new_key in PAIRS:
            if old_key in value and new_key in value:
                left, right = value[old_key], value[new_key]
                if isinstance(left, dict) or isinstance(right, dict):
                    for change in diff(left, right):
                        yield Change((*path, *change.path), change.before, change.after)
                elif not _same(left, right):
                    yield Change(path, left, right)
        for key, child in value.items():
            if any(key in pair for pair in PAIRS):
                continue
            yield from _pairs(child, (*path, str(key)), depth + 1)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _pairs(child, (*path, index), depth + 1)


def detail_changes(details: Any) -> list[Change]:
    """Return the before/after (or from/to) pairs found inside ``details``.

    A pair at ``details["verification"]`` gives a row for ``verification``;
    a pair of dicts gives one row per field that differs.
    """
    return list(_pairs(details, (), 0))


def detail_values(details: Any) -> list[tuple[str, Any]]:
    """Return the leaves of ``details`` that are not before/after pairs.

    These are the context of a change (its reason, the phase, a run's id):
    ``[("reason", "errors up"), ("phase", 2)]``, sorted by path.
    """
    if not isinstance(details, dict):
        return [] if details in (None, [], "") else [("value", details)]
    if not details:
        return []
    pair_keys = {key for pair in PAIRS for key in pair}
    leaves = flatten(details)
    return [
        (path_text(path), value)
        for path, value in sorted(leaves.items(), key=lambda item: _order(item[0]))
        if not _inside_pair(details, path, pair_keys)
    ]


def _inside_pair(details: Any, path: Path, pair_keys: set[str]) -> bool:
    """Return whether ``path`` runs through a before/after or from/to key."""
    node = details
    for step in path:
        if isinstance(node, dict) and step in pair_keys:
            if any(old in node and new in node for old, new in PAIRS):
                return True
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return False
    return False


def event_changes(*, before: Any, after: Any, details: Any = None) -> list[Change]:
    """Return every change an event records: its snapshots, then its details.

    A pair in ``details`` that only repeats a change of the snapshots (the
    ``from``/``to`` of a transition whose ``status`` changed the same way)
    is left out.
    """
    changes = diff(before, after)
    seen = [(change.before, change.after) for change in changes]
    for change in detail_changes(details):
        if any(_same(change.before, b) and _same(change.after, a) for b, a in seen):
            continue
        changes.append(Change(("details", *change.path), change.before, change.after))
    return changes


def value_text(value: Any, *, limit: int = 400) -> str:
    """Return ``value`` as a person reads it: text bare, the rest as JSON.

    MISSING is ``—`` (not there), ``None`` is ``null``. Text past ``limit``
    characters is cut with ``…``.
    """
    if value is MISSING:
        return "—"
    if isinstance(value, str):
        text = value if value else '""'
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "MISSING",
    "Change",
    "detail_changes",
    "detail_values",
    "diff",
    "event_changes",
    "flatten",
    "path_text",
    "value_text",
]
