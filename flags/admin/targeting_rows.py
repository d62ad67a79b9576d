"""Targeting as form rows: variations, rules with clause rows, serves in percent.

Pure parsing and rendering helpers for the admin's targeting widgets
(``flags.admin.targeting_widgets``): posted rows become the ruleset data the
services validate, and stored data becomes rows again. What an operator did
not touch comes back exactly as it was stored (split order, value types), so
saving an untouched page changes nothing.

Every parser raises ``RowError`` naming the row it refuses, in words an
operator reads ("rule 2, clause 1: ..."); shape and type only, the services
still decide.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from controlplane.api.input import UntrustedInput, loads_json, text_problem
from flags.engine import BUCKETS

# Operators as an operator reads them, in the order the select shows them.
OPERATORS: tuple[tuple[str, str], ...] = (
    ("in", "is one of"),
    ("starts_with", "starts with"),
    ("ends_with", "ends with"),
    ("contains", "contains"),
    ("matches", "matches (regex)"),
    ("lt", "<"),
    ("lte", "≤"),
    ("gt", ">"),
    ("gte", "≥"),
    ("exists", "exists"),
    ("segment", "is in segment"),
)
OPERATOR_LABELS = dict(OPERATORS)
NUMERIC_OPS = frozenset({"lt", "lte", "gt", "gte"})
MAX_ROWS = 200  # rows of one kind in one post: a page, not a bulk import
MAX_TEXT = 10_000
_INT_RE = re.compile(r"^[+-]?\d{1,18}$")


class RowError(ValueError):
    """A posted row refused; ``message`` names the row."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def clean_text(text: Any, where: str) -> str:
    """Return posted text stripped; refuse NUL, lone surrogates, huge text."""
    if text is None:
        return ""
    if not isinstance(text, str):
        raise RowError(f"{where}: must be text")
    problem = text_problem(text, allow_nul=False)
    if problem:
        raise RowError(f"{where} {problem}")
    if len(text) > MAX_TEXT:
        raise RowError(f"{where}: is longer than {MAX_TEXT} characters")
    return text.strip()


def row_count(value: Any, where: str) -> int:
    """Return a posted row count, 0 when absent; refuse nonsense."""
    if value in (None, ""):
        return 0
    if not isinstance(value, str) or not value.isdigit() or len(value) > 4:
        raise RowError(f"{where}: row count must be a small number")
    count = int(value)
    if count > MAX_ROWS:
        raise RowError(f"{where}: at most {MAX_ROWS} rows")
    return count


# -- typed values ----------------------------------------------------------------


def parse_number(text: str, where: str) -> int | float:
    """Return ``text`` as an int when integral, else a finite float."""
    if _INT_RE.match(text):
        return int(text)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise RowError(f"{where}: {text!r} is not a number") from None
    if not number.is_finite():
        raise RowError(f"{where}: {text!r} is not a finite number")
    result = float(number)
    if not math.isfinite(result):
        raise RowError(f"{where}: {text!r} is too large")
    return result


def parse_value(value_type: str, text: str, where: str) -> Any:
    """Return the typed value of a variation row, by the flag's value type."""
    if value_type == "bool":
        lowered = text.lower()
        if lowered in ("true", "on", "yes", "1"):
            return True
        if lowered in ("false", "off", "no", "0"):
            return False
        raise RowError(f"{where}: {text!r} is not true or false")
    if value_type == "number":
        if not text:
            raise RowError(f"{where}: a number is required")
        return parse_number(text, where)
    if value_type == "json":
        if not text:
            raise RowError(f"{where}: a JSON value is required")
        try:
            return loads_json(text, allow_nul=False)
        except UntrustedInput as exc:
            raise RowError(f"{where}: {exc}") from None
    return text  # string: as typed (stripped)


def value_text(value_type: str, value: Any) -> str:
    """Return the text a variation value is edited as."""
    if value_type == "string" and isinstance(value, str):
        return value
    if value_type == "bool":
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False)


# -- clause values ---------------------------------------------------------------


def values_text(op: str, values: Sequence[Any]) -> str:
    """Return clause values as typed text: ``gold, silver`` or a JSON list.

    The plain comma form is used only when it reads back to the same values;
    anything else (a comma inside a value, a number in ``is one of``) is
    shown as a JSON list so that saving it again changes nothing.
    """
    if op in NUMERIC_OPS:
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return ", ".join(json.dumps(v) for v in values)
    elif all(
        isinstance(v, str) and v and v == v.strip() and "," not in v for v in values
    ) and not (values and values[0].startswith("[")):
        return ", ".join(values)
    return json.dumps(list(values), ensure_ascii=False)


def parse_values(op: str, text: str, where: str) -> list[Any]:
    """Return clause values from ``a, b`` text or a JSON list."""
    if text.startswith("["):
        try:
            values = loads_json(text, allow_nul=False)
        except UntrustedInput as exc:
            raise RowError(f"{where}: {exc}") from None
        if not isinstance(values, list):
            raise RowError(f"{where}: a JSON list is needed")
        return values
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if op in NUMERIC_OPS:
        return [parse_number(part, where) for part in parts]
    return parts


# -- serves (a variation or a split in percent) ------------------------------------


def percent_text(weight: int) -> str:
    """Return a weight in thousandths of a percent as ``10.000``."""
    return f"{Decimal(weight) / 1000:.3f}"


def parse_percent(text: str, where: str) -> int:
    """Return the weight (thousandths of a percent) of ``10.5`` or ``10.500%``."""
    text = text.rstrip("%").strip()
    try:
        percent = Decimal(text)
    except InvalidOperation:
        raise RowError(f"{where}: {text!r} is not a percentage") from None
    if not percent.is_finite() or percent < 0 or percent > 100:
        raise RowError(f"{where}: must be between 0 and 100")
    weight = percent * 1000
    if weight != weight.to_integral_value():
        raise RowError(f"{where}: at most three decimals (0.001% is the step)")
    return int(weight)


def serve_rows(serve: Mapping[str, Any] | None, keys: Sequence[str]) -> dict:
    """Return the rows a serve is edited as: mode, variation, split arms.

    Split arms keep the stored order (bucketing walks it); variations not in
    the split follow with an empty share.
    """
    serve = serve or {}
    split = serve.get("split") or []
    in_split = [arm["variation"] for arm in split]
    arms = [
        {"variation": arm["variation"], "percent": percent_text(arm["weight"])}
        for arm in split
    ] + [{"variation": key, "percent": ""} for key in keys if key not in in_split]
    return {
        "mode": "split" if split else "variation",
        "variation": serve.get("variation", ""),
        "arms": arms,
    }


def parse_serve(
    mode: str, variation: str, arms: Sequence[tuple[str, str]], where: str
) -> dict:
    """Return ``{"variation": k}`` or ``{"split": [...]}`` from posted rows.

    ``arms`` are (variation, percent text) in the order shown; an empty
    share leaves the variation out of the split.
    """
    if mode == "variation":
        if not variation:
            raise RowError(f"{where}: choose a variation")
        return {"variation": variation}
    if mode != "split":
        raise RowError(f"{where}: choose a variation or a split")
    split = []
    for arm_key, text in arms:
        if text:
            split.append(
                {
                    "variation": arm_key,
                    "weight": parse_percent(text, f"{where}, {arm_key}"),
                }
            )
    if not split:
        raise RowError(f"{where}: give each variation of the split a percentage")
    total = sum(arm["weight"] for arm in split)
    if total != BUCKETS:
        raise RowError(
            f"{where}: the split adds up to {percent_text(total)}%, not 100.000%"
        )
    return {"split": split}


def serve_words(serve: Mapping[str, Any]) -> str:
    """Return a serve in words: ``on`` or ``10.000% on · 90.000% off``."""
    if "split" in serve:
        return " · ".join(
            f"{percent_text(arm['weight'])}% {arm['variation']}"
            for arm in serve["split"]
        )
    return str(serve.get("variation", "?"))


def clause_words(clause: Mapping[str, Any], segment_names: Mapping[str, str]) -> str:
    """Return a clause in words: ``tier is one of gold, silver``."""
    op = clause.get("op", "")
    values = clause.get("values", [])
    negate = "not " if clause.get("negate") else ""
    if op == "segment":
        names = ", ".join(segment_names.get(v, str(v)) for v in values)
        return f"{negate}in segment {names}"
    if op == "exists":
        return f"{clause.get('attribute', '')} {negate}exists"
    label = OPERATOR_LABELS.get(op, op)
    return f"{clause.get('attribute', '')} {negate}{label} {values_text(op, values)}"
