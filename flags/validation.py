"""Validation of plain ruleset data: variations, values, clauses, serves, rules.

Pure like the engine (standard library only; a test forbids Django): the
services validate every write with it, and anything that builds ruleset data
(the admin forms, the client) can check its input the same way. Each
function raises ``RulesetError`` naming the offending field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from flags.engine import BUCKETS, VALUE_TYPES, RulesetError, compile_pattern

_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$", re.IGNORECASE)


def percent_to_weight(percent: float) -> int:
    """Return a split weight (thousandths of a percent) for ``percent``."""
    if isinstance(percent, bool) or not isinstance(percent, (int, float)):
        raise RulesetError("percentage", "must be a number")
    if not math.isfinite(percent) or percent < 0 or percent > 100:
        raise RulesetError("percentage", "must be between 0 and 100")
    weight = round(percent * 1000)
    if abs(weight - percent * 1000) > 1e-6:
        raise RulesetError(
            "percentage", "has more than three decimals (0.001% is the step)"
        )
    return int(weight)


def validate_value(value_type: str, value: Any, field: str = "value") -> None:
    """Raise RulesetError unless ``value`` is a valid value of ``value_type``."""
    if value_type == "bool":
        ok = isinstance(value, bool)
    elif value_type == "string":
        ok = isinstance(value, str)
    elif value_type == "number":
        ok = (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        )
    elif value_type == "json":
        ok = _is_json(value)
    else:
        raise RulesetError("value_type", f"must be one of {', '.join(VALUE_TYPES)}")
    if not ok:
        raise RulesetError(field, f"{value!r} is not a valid {value_type} value")


def _is_json(value: Any, depth: int = 0) -> bool:
    if depth > 32:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _is_json(item, depth + 1)
            for key, item in value.items()
        )
    return False


def validate_variations(value_type: str, variations: Any) -> list[dict]:
    """Validate ordered variations; return them normalized.

    A bool flag has exactly ``on`` = true and ``off`` = false.
    """
    if value_type not in VALUE_TYPES:
        raise RulesetError("value_type", f"must be one of {', '.join(VALUE_TYPES)}")
    if not isinstance(variations, list) or not variations:
        raise RulesetError("variations", "must be a non-empty list")
    seen: set[str] = set()
    normalized = []
    for index, variation in enumerate(variations):
        where = f"variations[{index}]"
        if (
            not isinstance(variation, Mapping)
            or "key" not in variation
            or "value" not in variation
        ):
            raise RulesetError(where, "must be an object with 'key' and 'value'")
        key = variation["key"]
        if not isinstance(key, str) or not _KEY_RE.match(key):
            raise RulesetError(
                f"{where}.key", "must be a slug (letters, digits, _ . -)"
            )
        if key in seen:
            raise RulesetError(f"{where}.key", f"duplicate variation key {key!r}")
        seen.add(key)
        validate_value(value_type, variation["value"], f"{where}.value")
        item = {"key": key, "value": variation["value"]}
        if variation.get("name"):
            item["name"] = str(variation["name"])
        normalized.append(item)
    if value_type == "bool":
        values = {item["key"]: item["value"] for item in normalized}
        if values != {"on": True, "off": False}:
            raise RulesetError(
                "variations", "a bool flag has exactly on=true and off=false"
            )
    return normalized


_OPERATORS = frozenset(
    {
        "in",
        "starts_with",
        "ends_with",
        "contains",
        "matches",
        "lt",
        "lte",
        "gt",
        "gte",
        "exists",
        "segment",
    }
)


def validate_clause(
    clause: Any, field: str, segment_keys: Iterable[str] | None
) -> dict:
    """Validate one clause ``{attribute, op, values, negate}``; return it normalized."""
    if not isinstance(clause, Mapping):
        raise RulesetError(field, "must be an object")
    op = clause.get("op")
    if op not in _OPERATORS:
        raise RulesetError(
            f"{field}.op", f"must be one of {', '.join(sorted(_OPERATORS))}"
        )
    values = clause.get("values", [])
    if not isinstance(values, list):
        raise RulesetError(f"{field}.values", "must be a list")
    attribute = clause.get("attribute", "")
    if op == "segment":
        if segment_keys is None:
            raise RulesetError(
                f"{field}.op", "a segment cannot refer to another segment"
            )
        known = set(segment_keys)
        missing = [value for value in values if value not in known]
        if not values or missing:
            raise RulesetError(
                f"{field}.values", f"unknown segment(s): {missing or 'none given'}"
            )
        attribute = ""
    else:
        if not isinstance(attribute, str) or not attribute:
            raise RulesetError(f"{field}.attribute", "is required")
        if op != "exists" and not values:
            raise RulesetError(f"{field}.values", "needs at least one value")
    if op in {"lt", "lte", "gt", "gte"}:
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise RulesetError(f"{field}.values", f"{op} compares numbers")
    if op in {"starts_with", "ends_with", "contains", "matches"}:
        for value in values:
            if not isinstance(value, str):
                raise RulesetError(f"{field}.values", f"{op} compares strings")
    if op == "matches":
        # The engine's own compiler (RE2, linear time): what is accepted here
        # is exactly what serves, and each refused value is named by index.
        for index, value in enumerate(values):
            compile_pattern(value, f"{field}.values[{index}]")
    for value in values:
        if not isinstance(value, (str, int, float, bool)):
            raise RulesetError(
                f"{field}.values", "values are strings, numbers or booleans"
            )
    return {
        "attribute": attribute,
        "op": op,
        "values": list(values),
        "negate": bool(clause.get("negate", False)),
    }


def validate_serve(serve: Any, variation_keys: Iterable[str], field: str) -> dict:
    """Validate ``{"variation": k}`` or ``{"split": [{variation, weight}, ...]}``.

    Split weights are integers in thousandths of a percent summing to 100,000.
    """
    keys = set(variation_keys)
    if not isinstance(serve, Mapping):
        raise RulesetError(field, "must be an object with 'variation' or 'split'")
    if "variation" in serve and "split" not in serve:
        if serve["variation"] not in keys:
            raise RulesetError(
                f"{field}.variation", f"unknown variation {serve['variation']!r}"
            )
        return {"variation": serve["variation"]}
    if "split" in serve and "variation" not in serve:
        split = serve["split"]
        if not isinstance(split, list) or not split:
            raise RulesetError(f"{field}.split", "must be a non-empty list")
        total = 0
        seen: set[str] = set()
        normalized = []
        for index, arm in enumerate(split):
            where = f"{field}.split[{index}]"
            if not isinstance(arm, Mapping):
                raise RulesetError(
                    where, "must be an object with 'variation' and 'weight'"
                )
            if arm.get("variation") not in keys:
                raise RulesetError(
                    f"{where}.variation", f"unknown variation {arm.get('variation')!r}"
                )
            if arm["variation"] in seen:
                raise RulesetError(f"{where}.variation", "appears twice in the split")
            seen.add(arm["variation"])
            weight = arm.get("weight")
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise RulesetError(f"{where}.weight", "must be a non-negative integer")
            total += weight
            normalized.append({"variation": arm["variation"], "weight": weight})
        if total != BUCKETS:
            raise RulesetError(
                f"{field}.split", f"weights must sum to {BUCKETS} (got {total})"
            )
        return {"split": normalized}
    raise RulesetError(field, "must have exactly one of 'variation' or 'split'")


def validate_rules(
    rules: Any, variation_keys: Iterable[str], segment_keys: Iterable[str]
) -> list[dict]:
    """Validate ordered rules ``[{clauses: [...], serve: {...}, description}]``."""
    keys = list(variation_keys)
    segments = list(segment_keys)
    if not isinstance(rules, list):
        raise RulesetError("rules", "must be a list")
    normalized = []
    for index, rule in enumerate(rules):
        where = f"rules[{index}]"
        if not isinstance(rule, Mapping):
            raise RulesetError(where, "must be an object")
        clauses = rule.get("clauses")
        if not isinstance(clauses, list) or not clauses:
            raise RulesetError(f"{where}.clauses", "needs at least one clause")
        item = {
            "clauses": [
                validate_clause(clause, f"{where}.clauses[{n}]", segments)
                for n, clause in enumerate(clauses)
            ],
            "serve": validate_serve(rule.get("serve"), keys, f"{where}.serve"),
        }
        if rule.get("description"):
            item["description"] = str(rule["description"])
        normalized.append(item)
    return normalized
