"""The release admin's add form: flags by key and a named plan, no JSON."""

from __future__ import annotations

from django import forms

from canary.templates_data import PLANS
from flags.models import Environment, Flag


class ReleaseCreateForm(forms.Form):
    """Create a draft release: one draft rollout per flag, one plan."""

    name = forms.CharField(
        required=False,
        max_length=200,
        help_text="Empty: the flags' keys and the environment.",
    )
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(), to_field_name="key"
    )
    flags = forms.ModelMultipleChoiceField(
        queryset=Flag.objects.filter(archived=False).order_by("key"),
        to_field_name="key",
        widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="At least two flags; they move through the plan together.",
    )
    template = forms.ChoiceField(
        label="plan",
        choices=[
            (name, f"{name}: {plan['description']}") for name, plan in PLANS.items()
        ],
    )
    pilot_merchants = forms.CharField(
        required=False, help_text="Merchant keys, comma-separated."
    )
    duration_scale = forms.FloatField(
        required=False,
        min_value=0.001,
        max_value=100,
        help_text="Multiply every phase duration (0.05 turns minutes into seconds).",
    )
    check_template = forms.CharField(
        required=False,
        max_length=120,
        help_text="A check template, NAME or NAME@VERSION; empty: the default "
        "check set (check template default).",
    )

    def clean_pilot_merchants(self) -> list[str]:
        raw = self.cleaned_data["pilot_merchants"]
        return [key.strip() for key in raw.split(",") if key.strip()]
