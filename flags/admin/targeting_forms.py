"""Admin forms that edit targeting as rows, with the JSON as an advanced view.

Each form keeps the JSON fields of ``flags.forms`` (``variations``,
``rules``, ``fallthrough``) and adds row fields beside them. The rows win
unless the JSON text was edited (or the rows were not posted at all, as
from a script): then the JSON wins. Errors about a JSON field are shown on
the rows that produced it, so a refusal is never hidden in the collapsed
advanced section. Forms never save: the admin passes the cleaned data to
``flags.services``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from flags.admin.override_rows import OverrideRowsField
from flags.admin.targeting_widgets import (
    RuleRowsField,
    ServeField,
    VariationRowsField,
)
from flags.forms import FlagForm, FlagStateForm
from flags.models import MerchantOverride, Segment, ValueType


class _RowsOrJson:
    """Mixin: pick rows or JSON per pair; route JSON errors to the rows."""

    pairs: dict[str, str] = {}  # JSON field -> rows field

    def _use_rows(self) -> None:
        self._rows_used: set[str] = getattr(self, "_rows_used", set())
        for json_name, rows_name in self.pairs.items():
            if rows_name not in self.fields or json_name not in self.fields:
                continue
            value = self.cleaned_data.get(rows_name)
            if value is None or json_name in self.changed_data:
                continue
            self.cleaned_data[json_name] = value
            self._rows_used.add(json_name)
            self._errors.pop(json_name, None)

    def add_error(self, field: str | None, error: Any) -> None:
        if field in getattr(self, "_rows_used", ()):
            field = self.pairs[field]
        super().add_error(field, error)  # type: ignore[misc]


class TargetingFlagForm(_RowsOrJson, FlagForm):
    """A flag with its variations as typed rows."""

    pairs = {"variations": "variation_rows"}
    variation_rows = VariationRowsField(label="Variations")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            value_type = self.instance.value_type
            self.initial.setdefault("variation_rows", self.instance.variations)
        else:
            posted = self.data.get("value_type") if self.is_bound else None
            value_type = posted if posted in ValueType.values else ""
        if "variation_rows" in self.fields:
            self.fields["variation_rows"].configure(
                keys=[], value_type=value_type or ""
            )
        if "variations" in self.fields:
            self.fields["variations"].label = "Variations as JSON"
            self.fields["variations"].help_text = (
                "Advanced: if you edit this text, it replaces the rows above. "
                + self.fields["variations"].help_text
            )

    def clean(self) -> dict[str, Any]:
        rows = self.cleaned_data.get("variation_rows")
        if rows == [] and not self.instance.pk:
            self.cleaned_data["variation_rows"] = None  # a bool flag's on/off
        self._use_rows()
        return super().clean()


def _override_rows(state: Any) -> list[dict]:
    return [
        {
            "merchant": override.merchant.key,
            "variation": override.variation,
            "expires_at": override.expires_at,
            "note": override.note,
        }
        for override in MerchantOverride.objects.filter(
            flag_id=state.flag_id, environment_id=state.environment_id
        )
        .select_related("merchant")
        .order_by("merchant__key")[:200]
    ]


class TargetingFlagStateForm(_RowsOrJson, FlagStateForm):
    """A flag state: rules as clause rows, the default in percent, overrides."""

    pairs = {"rules": "targeting_rules", "fallthrough": "targeting_default"}
    targeting_rules = RuleRowsField(label="Rules")
    targeting_default = ServeField(label="Everyone else (default)")
    overrides_rows = OverrideRowsField(label="Merchant overrides")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["fallthrough"].required = False
        if not self.instance.pk:
            return
        keys = self.instance.flag.variation_keys
        segments = [
            (key, f"{name} ({key})" if name and name != key else key)
            for key, name in Segment.objects.order_by("name", "key").values_list(
                "key", "name"
            )[:500]
        ]
        for name in ("targeting_rules", "targeting_default", "overrides_rows"):
            self.fields[name].configure(keys=keys, segments=segments)
        self.initial.setdefault("targeting_rules", self.instance.rules)
        self.initial.setdefault("targeting_default", self.instance.fallthrough)
        self.initial.setdefault("overrides_rows", _override_rows(self.instance))
        self.fields["rules"].label = "Rules as JSON"
        self.fields["fallthrough"].label = "Default as JSON"
        for name in ("rules", "fallthrough"):
            self.fields[name].help_text = (
                "Advanced: if you edit this text, it replaces the rows above. "
                + self.fields[name].help_text
            )

    def clean(self) -> dict[str, Any]:
        self._use_rows()
        cleaned = super().clean()
        if cleaned.get("fallthrough") in (None, "") and "fallthrough" in self.fields:
            self.add_error("fallthrough", ValidationError("This field is required."))
        return cleaned
