"""The admin's forms: reasons, rollback level, fail phase, the add page."""

from __future__ import annotations

from django import forms

from canary.templates_data import PLANS
from controlplane.api.input import UntrustedInput, loads_json
from flags.forms import untrusted_input_error
from flags.models import Environment, Flag

# -- forms --------------------------------------------------------------------


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500, required=False, widget=forms.TextInput(attrs={"size": 60})
    )


class RequiredReasonForm(forms.Form):
    reason = forms.CharField(max_length=500, widget=forms.TextInput(attrs={"size": 60}))


class RollbackForm(RequiredReasonForm):
    level = forms.TypedChoiceField(
        coerce=int,
        initial=1,
        choices=[
            (1, "1: flag (restore the flag state captured at start)"),
            (2, "2: deployment revert (needs a deployment)"),
            (3, "3: migration revert (last resort)"),
        ],
    )


class FailPhaseForm(RequiredReasonForm):
    on_failure = forms.ChoiceField(
        required=False,
        choices=[
            ("", "as the checks say (most severe on_failure)"),
            ("pause", "pause"),
            ("rollback_1", "rollback level 1"),
            ("rollback_2", "rollback level 2"),
            ("rollback_3", "rollback level 3"),
        ],
    )


class RolloutCreateForm(forms.Form):
    """Create a draft rollout from a named plan."""

    flag = forms.ModelChoiceField(
        queryset=Flag.objects.filter(archived=False), to_field_name="key"
    )
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(), to_field_name="key"
    )
    template = forms.ChoiceField(
        choices=[
            (name, f"{name}: {plan['description']}") for name, plan in PLANS.items()
        ]
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
    name = forms.CharField(required=False, max_length=200)
    checks = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80}),
        help_text='A JSON list of health checks, e.g. [{"name": "errors", "provider": '
        '"outcomes", "spec": {"metric": "error_rate"}, "threshold": 0.05}]; empty, '
        "with no check template: the default check set (check template default).",
    )

    check_template = forms.CharField(
        required=False,
        max_length=120,
        help_text="A check template, NAME or NAME@VERSION (e.g. default): its "
        "checks come before the ones above.",
    )

    def clean_checks(self) -> list | None:
        raw = self.cleaned_data["checks"].strip()
        if not raw:
            # No checks and no check template: the template "default", as in
            # the command and the API (rollout_create_from_template).
            return None
        try:
            value = loads_json(raw, allow_nul=False)
        except UntrustedInput as exc:
            raise untrusted_input_error(exc) from None
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise forms.ValidationError("a JSON list of check objects")
        return value


# -- buttons ------------------------------------------------------------------
