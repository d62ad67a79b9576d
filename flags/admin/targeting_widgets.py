"""Form fields editing targeting as rows instead of JSON.

- ``VariationRowsField``: one row per variation (key, name, typed value).
- ``ServeField``: one variation, or a split in percent with three decimals.
- ``RuleRowsField``: ordered rules, each with clause rows (attribute,
  operator, values, segments by name) and a serve.
- ``OverrideRowsField`` (in ``override_rows``): a flag state's overrides,
  with expiry, plus a row to add one.

Each widget posts ``<name>-present`` so a form can tell rows that were sent
from a post that carried only the JSON fields (the advanced view, scripts):
then the field cleans to ``None`` and the JSON is used. Parsing lives in
``flags.admin.targeting_rows``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from flags.admin import targeting_rows as rows
from flags.admin.targeting_rows import RowError


class Posted(dict):
    """Rows as posted (text), kept to render the form again after an error."""


def posted_text(data: Mapping[str, Any], name: str) -> str:
    value = data.get(name)
    return value if isinstance(value, str) else ""


def rows_posted(data: Mapping[str, Any], name: str) -> bool:
    return data.get(f"{name}-present") == "1"


class RowsWidget(forms.Widget):
    """Base: the context carries the flag's variation keys and value type."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keys: list[str] = []
        self.value_type = "string"
        self.segments: list[tuple[str, str]] = []

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return not rows_posted(data, name)


# -- serves -------------------------------------------------------------------------


def _posted_serve(data: Mapping[str, Any], prefix: str) -> Posted:
    count = min(
        rows.row_count(posted_text(data, f"{prefix}-arms"), prefix), rows.MAX_ROWS
    )
    return Posted(
        mode=posted_text(data, f"{prefix}-mode"),
        variation=posted_text(data, f"{prefix}-variation"),
        arms=[
            {
                "variation": posted_text(data, f"{prefix}-arm-{i}-variation"),
                "percent": posted_text(data, f"{prefix}-arm-{i}-percent"),
            }
            for i in range(count)
        ],
    )


def _serve_context(value: Any, keys: Sequence[str], prefix: str) -> dict:
    shown = value if isinstance(value, Posted) else rows.serve_rows(value, keys)
    return {"prefix": prefix, "keys": keys, **shown}


def _clean_serve(posted: Mapping[str, Any], keys: Sequence[str], where: str) -> dict:
    mode = rows.clean_text(posted.get("mode"), where)
    variation = rows.clean_text(posted.get("variation"), where)
    if mode == "variation" and variation not in keys:
        raise RowError(f"{where}: choose one of {', '.join(keys)}")
    arms = []
    for arm in posted.get("arms", []):
        key = rows.clean_text(arm.get("variation"), where)
        if key not in keys:
            raise RowError(f"{where}: unknown variation {key!r}")
        arms.append((key, rows.clean_text(arm.get("percent"), f"{where}, {key}")))
    return rows.parse_serve(mode, variation, arms, where)


class ServeWidget(RowsWidget):
    template_name = "admin/flags/widgets/serve.html"

    def get_context(self, name: str, value: Any, attrs: Any) -> dict:
        context = super().get_context(name, value, attrs)
        context["serve"] = _serve_context(value, self.keys, name)
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if not rows_posted(data, name):
            return None
        try:
            return _posted_serve(data, name)
        except RowError as exc:
            return Posted(error=exc.message)


class RowsField(forms.Field):
    """A field whose widget posts rows; ``None`` when the rows were not sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        super().__init__(*args, **kwargs)

    def configure(
        self,
        *,
        keys: Sequence[str],
        value_type: str = "string",
        segments: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Tell the widget and the cleaning what the flag looks like."""
        self.keys = list(keys)
        self.value_type = value_type
        self.segments = list(segments)
        self.widget.keys = self.keys
        self.widget.value_type = value_type
        self.widget.segments = self.segments

    def bound_data(self, data: Any, initial: Any) -> Any:
        return initial if data is None else data

    def has_changed(self, initial: Any, data: Any) -> bool:
        if data is None:
            return False
        try:
            return self.clean(data) != initial
        except ValidationError:
            return True

    def clean(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, Posted) and "error" in value:
            raise ValidationError(value["error"], code="invalid")
        try:
            return self.parse(value)
        except RowError as exc:
            raise ValidationError(exc.message, code="invalid") from None

    def parse(self, value: Posted) -> Any:
        raise NotImplementedError


class ServeField(RowsField):
    widget = ServeWidget

    def parse(self, value: Posted) -> dict:
        return _clean_serve(value, self.keys, "default")


# -- variations ----------------------------------------------------------------------


class VariationRowsWidget(RowsWidget):
    template_name = "admin/flags/widgets/variation_rows.html"
    extra = 2

    def get_context(self, name: str, value: Any, attrs: Any) -> dict:
        context = super().get_context(name, value, attrs)
        if isinstance(value, Posted):
            shown = list(value.get("rows", []))
        else:
            shown = [
                {
                    "key": item.get("key", ""),
                    "name": item.get("name", ""),
                    "value": rows.value_text(self.value_type, item.get("value")),
                }
                for item in (value if isinstance(value, list) else [])
                if isinstance(item, Mapping)
            ]
        is_bool = self.value_type == "bool" and bool(shown)
        if not is_bool:
            shown += [{"key": "", "name": "", "value": ""}] * self.extra
        context["rows"] = shown
        context["is_bool"] = is_bool
        context["value_type"] = self.value_type
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if not rows_posted(data, name):
            return None
        try:
            count = rows.row_count(posted_text(data, f"{name}-rows"), "variations")
        except RowError as exc:
            return Posted(error=exc.message)
        return Posted(
            rows=[
                {
                    "key": posted_text(data, f"{name}-{i}-key"),
                    "name": posted_text(data, f"{name}-{i}-name"),
                    "value": posted_text(data, f"{name}-{i}-value"),
                    "delete": data.get(f"{name}-{i}-delete") == "on",
                }
                for i in range(count)
            ]
        )


class VariationRowsField(RowsField):
    widget = VariationRowsWidget

    def parse(self, value: Posted) -> list[dict]:
        variations = []
        for index, row in enumerate(value.get("rows", []), start=1):
            where = f"variation {index}"
            key = rows.clean_text(row.get("key"), f"{where} key")
            name = rows.clean_text(row.get("name"), f"{where} name")
            text = rows.clean_text(row.get("value"), f"{where} value")
            if row.get("delete") or not (key or name or text):
                continue
            if not key:
                raise RowError(f"{where}: a key is required")
            item: dict[str, Any] = {
                "key": key,
                "value": rows.parse_value(self.value_type, text, f"{where} value"),
            }
            if name:
                item["name"] = name
            variations.append(item)
        return variations


# -- rules ---------------------------------------------------------------------------


class RuleRowsWidget(RowsWidget):
    template_name = "admin/flags/widgets/rule_rows.html"

    def get_context(self, name: str, value: Any, attrs: Any) -> dict:
        context = super().get_context(name, value, attrs)
        if isinstance(value, Posted):
            shown = [dict(rule) for rule in value.get("rules", [])]
        else:
            shown = [
                {
                    "description": rule.get("description", ""),
                    "clauses": [
                        {
                            "attribute": clause.get("attribute", ""),
                            "op": clause.get("op", "in"),
                            "values": ""
                            if clause.get("op") == "segment"
                            else rows.values_text(
                                clause.get("op", ""), clause.get("values", [])
                            ),
                            "segments": list(clause.get("values", []))
                            if clause.get("op") == "segment"
                            else [],
                            "negate": bool(clause.get("negate")),
                        }
                        for clause in rule.get("clauses", [])
                    ],
                    "serve": rule.get("serve") or {},
                }
                for rule in (value if isinstance(value, list) else [])
                if isinstance(rule, Mapping)
            ]
            shown.append({"description": "", "clauses": [], "serve": {}, "new": True})
        blank = {"attribute": "", "op": "in", "values": "", "segments": []}
        for index, rule in enumerate(shown):
            rule["prefix"] = f"{name}-{index}"
            rule["number"] = index + 1
            clauses = list(rule.get("clauses", []))
            if not isinstance(value, Posted):
                clauses.append(dict(blank))
            rule["clauses"] = [
                {**clause, "prefix": f"{name}-{index}-clause-{n}"}
                for n, clause in enumerate(clauses)
            ]
            rule["serve_context"] = _serve_context(
                rule.get("serve"), self.keys, f"{name}-{index}-serve"
            )
        context["rules"] = shown
        context["operators"] = rows.OPERATORS
        context["segments"] = self.segments
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if not rows_posted(data, name):
            return None
        try:
            count = rows.row_count(posted_text(data, f"{name}-rules"), "rules")
            posted = []
            for i in range(count):
                prefix = f"{name}-{i}"
                clause_count = rows.row_count(
                    posted_text(data, f"{prefix}-clauses"), f"rule {i + 1}"
                )
                posted.append(
                    {
                        "description": posted_text(data, f"{prefix}-description"),
                        "order": posted_text(data, f"{prefix}-order"),
                        "delete": data.get(f"{prefix}-delete") == "on",
                        "new": data.get(f"{prefix}-new") == "1",
                        "clauses": [
                            {
                                "attribute": posted_text(
                                    data, f"{prefix}-clause-{n}-attribute"
                                ),
                                "op": posted_text(data, f"{prefix}-clause-{n}-op"),
                                "values": posted_text(
                                    data, f"{prefix}-clause-{n}-values"
                                ),
                                "segments": [
                                    v
                                    for v in data.getlist(
                                        f"{prefix}-clause-{n}-segments"
                                    )[: rows.MAX_ROWS]
                                    if isinstance(v, str)
                                ]
                                if hasattr(data, "getlist")
                                else [],
                                "negate": data.get(f"{prefix}-clause-{n}-negate")
                                == "on",
                                "delete": data.get(f"{prefix}-clause-{n}-delete")
                                == "on",
                            }
                            for n in range(clause_count)
                        ],
                        "serve": _posted_serve(data, f"{prefix}-serve"),
                    }
                )
        except RowError as exc:
            return Posted(error=exc.message)
        return Posted(rules=posted)


def _parse_clause(clause: Mapping[str, Any], where: str) -> dict | None:
    attribute = rows.clean_text(clause.get("attribute"), f"{where} attribute")
    op = rows.clean_text(clause.get("op"), f"{where} operator")
    text = rows.clean_text(clause.get("values"), f"{where} values")
    segments = [rows.clean_text(s, f"{where} segment") for s in clause["segments"]]
    if clause.get("delete"):
        return None
    if op == "segment":
        if not segments and not attribute and not text:
            return None
        if not segments:
            raise RowError(f"{where}: choose at least one segment")
        values: list[Any] = segments
        attribute = ""
    else:
        if not attribute and not text:
            return None  # an empty row
        if op not in rows.OPERATOR_LABELS:
            raise RowError(f"{where}: choose an operator")
        if not attribute:
            raise RowError(f"{where}: an attribute is required")
        values = rows.parse_values(op, text, f"{where} values")
        if op != "exists" and not values:
            raise RowError(f"{where}: give at least one value")
    return {
        "attribute": attribute,
        "op": op,
        "values": values,
        "negate": bool(clause.get("negate")),
    }


class RuleRowsField(RowsField):
    widget = RuleRowsWidget

    def parse(self, value: Posted) -> list[dict]:
        ordered = []
        for index, rule in enumerate(value.get("rules", [])):
            where = f"rule {index + 1}"
            description = rows.clean_text(rule.get("description"), f"{where} note")
            order_text = rows.clean_text(rule.get("order"), f"{where} position")
            clauses = [
                parsed
                for n, clause in enumerate(rule.get("clauses", []))
                if (parsed := _parse_clause(clause, f"{where}, clause {n + 1}"))
            ]
            if rule.get("delete") or (rule.get("new") and not clauses):
                continue
            if not clauses:
                raise RowError(f"{where}: needs a clause (or tick 'remove')")
            item: dict[str, Any] = {
                "clauses": clauses,
                "serve": _clean_serve(rule.get("serve", {}), self.keys, where),
            }
            if description:
                item["description"] = description
            position = (
                rows.parse_number(order_text, f"{where} position")
                if order_text
                else index + 1
            )
            ordered.append((position, index, item))
        return [item for _, _, item in sorted(ordered, key=lambda t: (t[0], t[1]))]
