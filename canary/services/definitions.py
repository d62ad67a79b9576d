"""Validate rollout definitions: phases, variations, deployment."""

from __future__ import annotations

import math
from typing import Any

from canary.exceptions import InvalidInput
from canary.models import Gate, TargetType
from canary.services._common import known_fields_object
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
