"""Validate rollout definitions: phases, health checks, variations, deployment."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from canary.exceptions import InvalidInput
from canary.models import (
    CheckMode,
    Comparator,
    Gate,
    HealthCheck,
    NoDataVerdict,
    OnFailure,
    Provider,
    TargetType,
)
from canary.services._common import known_fields_object
from canary.services.comparisons import COMPARE_METRICS
from flags.models import Environment, Flag, Merchant, ValueType

_PHASE_FIELDS = {
    "name",
    "target_type",
    "percentage",
    "pilot_merchants",
    "min_duration",
    "max_duration",
    "requires_approval",
    "gate",
}


def _whole(value: Any, field: str, *, minimum: int = 0) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (
            isinstance(value, float)
            and (not math.isfinite(value) or int(value) != value)
        )
    ):
        raise InvalidInput(f"{field}: must be a whole number of seconds", field=field)
    if value < minimum:
        raise InvalidInput(f"{field}: must be at least {minimum}", field=field)
    return int(value)


def phases_clean(phases: Any) -> list[dict]:
    """Return phase definitions with defaults filled in, or raise InvalidInput.

    A phase is ``{"target_type": "pilot" | "percentage" | "internal",
    "percentage"?: 0..100, "pilot_merchants"?: [keys], "name"?,
    "min_duration"?: s, "max_duration"?: s, "requires_approval"?: bool,
    "gate"?: "prove" | "guard"}``;
    ``target_type`` may be left out when ``percentage`` or
    ``pilot_merchants`` says it. Pilot and internal phases need merchants
    that exist and are active. Percentages never decrease (a split only
    adds merchants as it grows). Errors name the field, e.g.
    ``phases[2].percentage``.
    """
    if not isinstance(phases, list) or not phases:
        raise InvalidInput("phases: at least one phase is required", field="phases")
    cleaned: list[dict] = []
    last_percentage = -1.0
    all_keys: set[str] = set()
    for i, raw in enumerate(phases):
        prefix = f"phases[{i}]"
        known_fields_object(raw, _PHASE_FIELDS, prefix)
        target_type = raw.get("target_type")
        if target_type is None:
            target_type = (
                TargetType.PERCENTAGE if "percentage" in raw else TargetType.PILOT
            )
        if target_type not in TargetType.values:
            raise InvalidInput(
                f"{prefix}.target_type: must be one of {', '.join(TargetType.values)}",
                field=f"{prefix}.target_type",
            )
        phase: dict[str, Any] = {
            "index": i,
            "target_type": target_type,
            "percentage": None,
            "pilot_merchants": [],
        }
        if target_type == TargetType.PERCENTAGE:
            percentage = raw.get("percentage")
            if (
                isinstance(percentage, bool)
                or not isinstance(percentage, (int, float))
                or (isinstance(percentage, float) and not math.isfinite(percentage))
            ):
                raise InvalidInput(
                    f"{prefix}.percentage: a number from 0 to 100 is required",
                    field=f"{prefix}.percentage",
                )
            if not 0 <= percentage <= 100:
                raise InvalidInput(
                    f"{prefix}.percentage: must be between 0 and 100",
                    field=f"{prefix}.percentage",
                )
            if percentage < last_percentage:
                raise InvalidInput(
                    f"{prefix}.percentage: must not be lower than an earlier phase's "
                    f"({last_percentage:g}%)",
                    field=f"{prefix}.percentage",
                )
            last_percentage = phase["percentage"] = float(percentage)
            default_name = f"{percentage:g}%"
        else:
            keys = raw.get("pilot_merchants")
            if (
                not isinstance(keys, list)
                or not keys
                or not all(isinstance(k, str) and k.strip() for k in keys)
            ):
                raise InvalidInput(
                    f"{prefix}.pilot_merchants: a non-empty list of merchant keys is required",
                    field=f"{prefix}.pilot_merchants",
                )
            keys = list(dict.fromkeys(k.strip() for k in keys))
            known = dict(
                Merchant.objects.filter(key__in=keys).values_list("key", "is_active")
            )
            for key in keys:
                if key not in known:
                    raise InvalidInput(
                        f"{prefix}.pilot_merchants: unknown merchant {key!r}",
                        field=f"{prefix}.pilot_merchants",
                    )
                if not known[key]:
                    raise InvalidInput(
                        f"{prefix}.pilot_merchants: merchant {key!r} is inactive",
                        field=f"{prefix}.pilot_merchants",
                    )
            phase["pilot_merchants"] = keys
            all_keys.update(keys)
            default_name = str(target_type)
        name = raw.get("name", default_name)
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput(
                f"{prefix}.name: must be 1 to 100 characters", field=f"{prefix}.name"
            )
        phase["name"] = name.strip()
        phase["min_duration"] = _whole(
            raw.get("min_duration", 0), f"{prefix}.min_duration"
        )
        max_duration = raw.get("max_duration")
        if max_duration is not None:
            max_duration = _whole(max_duration, f"{prefix}.max_duration")
            if max_duration < phase["min_duration"]:
                raise InvalidInput(
                    f"{prefix}.max_duration: must not be below min_duration",
                    field=f"{prefix}.max_duration",
                )
        phase["max_duration"] = max_duration
        requires_approval = raw.get("requires_approval", False)
        if not isinstance(requires_approval, bool):
            raise InvalidInput(
                f"{prefix}.requires_approval: must be true or false",
                field=f"{prefix}.requires_approval",
            )
        phase["requires_approval"] = requires_approval
        gate = raw.get("gate", Gate.PROVE)
        if gate not in Gate.values:
            raise InvalidInput(
                f"{prefix}.gate: must be one of {', '.join(Gate.values)}",
                field=f"{prefix}.gate",
            )
        phase["gate"] = gate
        cleaned.append(phase)
    return cleaned


def variations_clean(
    flag: Flag, treatment: str | None, control: str | None
) -> tuple[str, str]:
    if flag.value_type == ValueType.BOOL:
        treatment, control = treatment or "on", control or "off"
    if not treatment or not control:
        raise InvalidInput(
            "treatment: a non-bool flag needs a treatment and a control variation",
            field="treatment",
        )
    for name, key in (("treatment", treatment), ("control", control)):
        if key not in flag.variation_keys:
            raise InvalidInput(
                f"{name}: {key!r} is not a variation of {flag.key}", field=name
            )
    if treatment == control:
        raise InvalidInput("control: must differ from the treatment", field="control")
    return treatment, control


def deployment_clean(deployment: Any, environment: Environment) -> Any:
    """Return the Deployment row for ``deployment`` (a row or an id)."""
    if deployment is None:
        return None
    from rollback.models import Deployment

    pk = deployment.pk if isinstance(deployment, Deployment) else deployment
    row = Deployment.objects.filter(pk=pk).first() if isinstance(pk, int) else None
    if row is None:
        raise InvalidInput(
            f"deployment: unknown deployment {deployment!r}", field="deployment"
        )
    if row.environment_id != environment.pk:
        raise InvalidInput(
            f"deployment: deployment {row.pk} is not in {environment.key}",
            field="deployment",
        )
    return row


# Health checks ---------------------------------------------------------

# What a check definition holds, in the order it is shown (the API output,
# the operator preflight) and the only keys a definition may carry.
CHECK_FIELDS: tuple[str, ...] = (
    "name",
    "provider",
    "spec",
    "comparator",
    "threshold",
    "mode",
    "relative_tolerance",
    "interval",
    "min_samples",
    "failure_limit",
    "inconclusive_limit",
    "consecutive_error_limit",
    "no_data",
    "on_failure",
    "timeout",
    "margin",
    "alpha",
    "dry_run",
)
_CHECK_FIELDS = frozenset(CHECK_FIELDS)
_DEFAULTS: dict[str, Any] = {
    "comparator": Comparator.LT,
    "threshold": None,
    "mode": CheckMode.ABSOLUTE,
    "relative_tolerance": 0.2,
    "interval": 30,
    "min_samples": 1,
    "failure_limit": 0,
    "inconclusive_limit": 3,
    "consecutive_error_limit": 3,
    "no_data": NoDataVerdict.INCONCLUSIVE,
    "on_failure": OnFailure.ROLLBACK_1,
    "timeout": 10.0,
    "margin": None,
    "alpha": 0.05,
    "dry_run": False,
}


# Creating or changing a sql check runs its author's query on a database:
# interfaces that act for a person (API, admin) require this permission on
# top of the rollout and health check ones; commands run as operators.
SQL_CHECK_PERMISSION = "canary.manage_sql_checks"


def checks_need_sql_permission(*definitions: Any) -> bool:
    """Return whether writing ``definitions`` needs ``SQL_CHECK_PERMISSION``.

    Each item is a check definition (a dict), a list of them, or a
    ``HealthCheck`` row (the check before a change): any sql one counts.
    """
    for definition in definitions:
        if isinstance(definition, list | tuple):
            if checks_need_sql_permission(*definition):
                return True
        elif isinstance(definition, HealthCheck):
            if definition.provider == Provider.SQL:
                return True
        elif isinstance(definition, Mapping):
            if definition.get("provider") == Provider.SQL:
                return True
    return False


def _number(
    value: Any,
    field: str,
    *,
    minimum: float | None = None,
    integer: bool = False,
    above: float | None = None,
) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field}: must be a number", field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{field}: must be a finite number", field=field)
    if integer and int(value) != value:
        raise InvalidInput(f"{field}: must be a whole number", field=field)
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{field}: must be at least {minimum:g}", field=field)
    if above is not None and value <= above:
        raise InvalidInput(f"{field}: must be more than {above:g}", field=field)
    return int(value) if integer else float(value)


def _choice(value: Any, field: str, choices: list[str]) -> str:
    if value not in choices:
        raise InvalidInput(f"{field}: must be one of {', '.join(choices)}", field=field)
    return value


def _provider_spec(provider: str, spec: Any, prefix: str) -> dict:
    """Validate ``spec`` with the provider's own rules when it is installed."""
    try:
        from canary.providers import PROVIDERS
    except ImportError:  # providers not installed: keep the spec as given
        PROVIDERS = {}
    if not isinstance(spec, dict):
        raise InvalidInput(f"{prefix}.spec: must be an object", field=f"{prefix}.spec")
    implementation = PROVIDERS.get(provider)
    if implementation is None:
        return spec
    try:
        return implementation.validate_spec(spec)
    except InvalidInput as exc:
        field = f"{prefix}.{exc.field}" if exc.field else f"{prefix}.spec"
        message = (
            exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        )
        raise InvalidInput(message, field=field) from None


def checks_clean(checks: Any) -> list[dict]:
    """Return check definitions with defaults filled in, or raise InvalidInput.

    Each error names its field, e.g. ``checks[1].threshold``. Absolute mode
    needs a threshold; cohort mode reads ``threshold`` as the significance
    level alpha (default 0.05) and ``relative_tolerance`` as the practical
    tolerance. ``min_samples`` is at least 1: missing data never promotes.
    """
    if checks is None:
        return []
    if not isinstance(checks, list):
        raise InvalidInput("checks: must be a list", field="checks")
    cleaned: list[dict] = []
    names: set[str] = set()
    for i, raw in enumerate(checks):
        prefix = f"checks[{i}]"
        known_fields_object(raw, _CHECK_FIELDS, prefix)
        check = {**_DEFAULTS, **raw}
        name = check.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput(
                f"{prefix}.name: a name of 1 to 100 characters is required",
                field=f"{prefix}.name",
            )
        check["name"] = name = name.strip()
        if name in names:
            raise InvalidInput(
                f"{prefix}.name: duplicate check name {name!r}", field=f"{prefix}.name"
            )
        names.add(name)
        check["provider"] = _choice(
            check.get("provider"), f"{prefix}.provider", Provider.values
        )
        check["comparator"] = _choice(
            check["comparator"], f"{prefix}.comparator", Comparator.values
        )
        check["mode"] = _choice(check["mode"], f"{prefix}.mode", CheckMode.values)
        check["no_data"] = _choice(
            check["no_data"], f"{prefix}.no_data", NoDataVerdict.values
        )
        check["on_failure"] = _choice(
            check["on_failure"], f"{prefix}.on_failure", OnFailure.values
        )
        if check["threshold"] is not None:
            check["threshold"] = _number(check["threshold"], f"{prefix}.threshold")
        if check["mode"] == CheckMode.ABSOLUTE and check["threshold"] is None:
            raise InvalidInput(
                f"{prefix}.threshold: required in absolute mode",
                field=f"{prefix}.threshold",
            )
        if check["mode"] == CheckMode.COHORT:
            if check["provider"] != Provider.OUTCOMES:
                raise InvalidInput(
                    f"{prefix}.mode: cohort comparison needs the outcomes provider",
                    field=f"{prefix}.mode",
                )
            if check["threshold"] is not None and not 0 < check["threshold"] < 1:
                raise InvalidInput(
                    f"{prefix}.threshold: in cohort mode the significance level must be "
                    "between 0 and 1",
                    field=f"{prefix}.threshold",
                )
        if check["mode"] == CheckMode.COMPARE:
            _compare_clean(check, prefix)
        elif check["margin"] is not None:
            raise InvalidInput(
                f"{prefix}.margin: only compare mode has a margin",
                field=f"{prefix}.margin",
            )
        check["alpha"] = _number(check["alpha"], f"{prefix}.alpha", above=0)
        if not check["alpha"] < 0.5:
            raise InvalidInput(
                f"{prefix}.alpha: must be below 0.5", field=f"{prefix}.alpha"
            )
        if not isinstance(check["dry_run"], bool):
            raise InvalidInput(
                f"{prefix}.dry_run: must be true or false", field=f"{prefix}.dry_run"
            )
        check["relative_tolerance"] = _number(
            check["relative_tolerance"], f"{prefix}.relative_tolerance", minimum=0
        )
        check["interval"] = _number(
            check["interval"], f"{prefix}.interval", minimum=1, integer=True
        )
        check["min_samples"] = _number(
            check["min_samples"], f"{prefix}.min_samples", minimum=1, integer=True
        )
        for limit in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
            check[limit] = _number(
                check[limit], f"{prefix}.{limit}", minimum=0, integer=True
            )
        check["timeout"] = _number(check["timeout"], f"{prefix}.timeout", above=0)
        check["spec"] = _provider_spec(
            check["provider"], check.get("spec") or {}, prefix
        )
        cleaned.append(check)
    return cleaned


def _compare_clean(check: dict, prefix: str) -> None:
    """Fill in and validate a compare-mode check (outcomes provider only:
    it needs per-merchant events and baselines)."""
    from canary import sequential

    if check["provider"] != Provider.OUTCOMES:
        raise InvalidInput(
            f"{prefix}.mode: compare mode needs the outcomes provider",
            field=f"{prefix}.mode",
        )
    metric = (
        (check.get("spec") or {}).get("metric")
        if isinstance(check.get("spec"), dict)
        else None
    )
    if metric not in COMPARE_METRICS:
        raise InvalidInput(
            f"{prefix}.spec.metric: compare mode needs one of "
            f"{', '.join(COMPARE_METRICS)}",
            field=f"{prefix}.spec.metric",
        )
    if check["margin"] is None:
        check["margin"] = sequential.DEFAULT_MARGINS[COMPARE_METRICS[metric]]
    check["margin"] = _number(check["margin"], f"{prefix}.margin", above=0)
    if metric == "error_rate" and not check["margin"] < 1:
        raise InvalidInput(
            f"{prefix}.margin: an error-rate margin is a ratio below 1 (0.01 = 1 pp)",
            field=f"{prefix}.margin",
        )
    if check["threshold"] is not None:
        raise InvalidInput(
            f"{prefix}.threshold: compare mode has a margin, not a threshold",
            field=f"{prefix}.threshold",
        )
