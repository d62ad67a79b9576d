"""Admin forms: parse and type-check input; the services decide and write.

Forms here never save. ``flags.admin`` passes their cleaned data to
``flags.services``; whatever the services refuse comes back as a form error.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput, JSONString

from controlplane.api.input import UntrustedInput, loads_json, text_problem
from flags import engine, validation
from flags.models import (
    Environment,
    Flag,
    FlagState,
    Merchant,
    MerchantOverride,
    Segment,
)


def untrusted_input_error(exc: UntrustedInput) -> ValidationError:
    """Return the form error for refused input, naming the path inside it."""
    message = f"{exc.field}: {exc.message}" if exc.field else exc.message
    return ValidationError(message, code="invalid")


class PrettyJSONField(forms.JSONField):
    """A JSON text area shown indented, so rules and splits stay readable.

    The text is parsed as untrusted input (``controlplane.api.input``): no
    lone surrogates or NUL in strings, finite numbers, bounded depth; a
    refusal is a form error naming the path (``tier: must not ...``).
    """

    def __init__(self, *args: Any, rows: int = 8, **kwargs: Any) -> None:
        kwargs.setdefault(
            "widget",
            forms.Textarea(
                attrs={
                    "rows": rows,
                    "cols": 80,
                    "class": "vLargeTextField",
                    "style": "font-family: monospace",
                }
            ),
        )
        super().__init__(*args, **kwargs)

    def to_python(self, value: Any) -> Any:
        if self.disabled:
            return value
        if value in self.empty_values:
            return None
        if isinstance(value, (list, dict, int, float, JSONString)):
            return value
        try:
            converted = loads_json(value, allow_nul=False)
        except UntrustedInput as exc:
            raise untrusted_input_error(exc) from None
        return JSONString(converted) if isinstance(converted, str) else converted

    def bound_data(self, data: Any, initial: Any) -> Any:
        # A refused text is shown again as typed: never re-encoded, since a
        # lone surrogate cannot be written into the page.
        if self.disabled:
            return initial
        if data is None:
            return None
        try:
            return loads_json(data, allow_nul=False)
        except UntrustedInput:
            return InvalidJSONInput(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


class TagsField(forms.CharField):
    """Comma-separated tags in the form, a list of strings in the model."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return ", ".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value)
        # Checked here: the NUL validator of CharField sees the list, not text.
        problem = text_problem(text, allow_nul=False)
        if problem:
            raise ValidationError(f"Tags {problem}.", code="invalid")
        return [tag.strip() for tag in text.split(",") if tag.strip()]


def _variations_help() -> str:
    return (
        'Ordered list, e.g. [{"key": "on", "value": true}, {"key": "off", "value": false}]. '
        "Values must match the value type. Leave empty for a bool flag (on/off)."
    )


class FlagForm(forms.ModelForm):
    """Add a flag (every field) or change one (key and value type fixed)."""

    variations = PrettyJSONField(required=False, help_text=_variations_help())
    tags = TagsField(required=False, help_text="Comma-separated.")
    off_variation = forms.CharField(
        required=False,
        help_text="Served while the flag is off. Defaults to 'off' or the last variation.",
    )

    class Meta:
        model = Flag
        fields = [
            "key",
            "name",
            "value_type",
            "variations",
            "description",
            "owner",
            "tags",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        value_type = (
            self.instance.value_type if self.instance.pk else cleaned.get("value_type")
        )
        variations = cleaned.get("variations")
        if variations in (None, "", [], {}):
            cleaned["variations"] = None
            if self.instance.pk:
                self.add_error("variations", "A flag needs at least one variation.")
            elif value_type and value_type != "bool":
                self.add_error("variations", f"A {value_type} flag needs variations.")
        elif value_type:
            try:
                cleaned["variations"] = validation.validate_variations(
                    value_type, variations
                )
            except engine.RulesetError as exc:
                self.add_error("variations", f"{exc.field}: {exc.message}")
        return cleaned


class FlagStateForm(forms.ModelForm):
    """Edit how a flag is served in one environment, based on a version."""

    off_variation = forms.ChoiceField()
    rules = PrettyJSONField(
        required=False,
        rows=10,
        help_text='Ordered: [{"clauses": [{"attribute": "tier", "op": "in", '
        '"values": ["gold"]}], "serve": {"variation": "on"}}]',
    )
    fallthrough = PrettyJSONField(
        rows=6,
        help_text='{"variation": "off"} or {"split": [{"variation": "on", "weight": 10000}, '
        '{"variation": "off", "weight": 90000}]} (weights in thousandths of a '
        "percent, summing to 100000).",
    )
    version = forms.IntegerField(widget=forms.HiddenInput, min_value=1)

    class Meta:
        model = FlagState
        fields = [
            "enabled",
            "off_variation",
            "rules",
            "fallthrough",
            "bucket_by",
            "version",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            keys = self.instance.flag.variation_keys
            self.fields["off_variation"].choices = [(key, key) for key in keys]

    def clean_rules(self) -> list:
        rules = self.cleaned_data.get("rules")
        return [] if rules in (None, "") else rules


class MerchantForm(forms.ModelForm):
    attributes = PrettyJSONField(
        required=False,
        rows=6,
        help_text='An object, e.g. {"tier": "gold", "country": "KR"}.',
    )

    class Meta:
        model = Merchant
        fields = ["key", "name", "is_active", "attributes"]

    def clean_attributes(self) -> dict:
        attributes = self.cleaned_data.get("attributes")
        if attributes in (None, ""):
            return {}
        if not isinstance(attributes, dict):
            raise ValidationError('Use a JSON object: {"name": value, ...}.')
        return attributes


class SegmentForm(forms.ModelForm):
    clauses = PrettyJSONField(
        rows=8,
        help_text='All must match: [{"attribute": "tier", "op": "in", "values": ["gold"]}].',
    )

    class Meta:
        model = Segment
        fields = ["key", "name", "description", "clauses"]


class EnvironmentForm(forms.ModelForm):
    class Meta:
        model = Environment
        fields = ["key", "name", "sort_order"]


class MerchantOverrideForm(forms.ModelForm):
    class Meta:
        model = MerchantOverride
        fields = ["flag", "environment", "merchant", "variation", "note", "expires_at"]
        widgets = {"note": forms.TextInput(attrs={"size": 60})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:  # the flag is fixed: choose among its variations
            keys = self.instance.flag.variation_keys
            self.fields["variation"] = forms.ChoiceField(
                choices=[(key, key) for key in keys]
            )


# -- intermediate pages of admin actions ------------------------------------------


class KillForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.TextInput(attrs={"size": 60}),
        help_text="Why: shown on the flag state and kept in the audit log.",
    )


class RestoreForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.TextInput(attrs={"size": 60})
    )


class PercentageForm(forms.Form):
    percentage = forms.DecimalField(
        min_value=Decimal(0),
        max_value=Decimal(100),
        max_digits=6,
        decimal_places=3,
        help_text="Share of merchants served the treatment by default (0.001 steps).",
    )
    treatment = forms.CharField(
        required=False,
        max_length=100,
        help_text="Variation served to the percentage ('on' for bool flags).",
    )
    control = forms.CharField(
        required=False,
        max_length=100,
        help_text="Variation served to the rest ('off' for bool flags).",
    )


class EnvironmentChoiceForm(forms.Form):
    """Pick the environment a flag-level action applies to."""

    environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(), empty_label=None
    )
