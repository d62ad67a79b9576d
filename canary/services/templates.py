"""Create rollouts from named plans (``canary.templates_data.PLANS``)."""

from __future__ import annotations

import copy
from typing import Any

from canary.exceptions import InvalidInput
from canary.models import Rollout, TargetType
from canary.services.rollouts import rollout_create
from canary.templates_data import DEFAULT_CHECKS, PLANS
from flags.models import Environment, Flag


def template_list() -> dict[str, str]:
    """Return the named plans and their descriptions."""
    return {name: plan["description"] for name, plan in PLANS.items()}


def template_phases(
    template: str,
    *,
    pilot_merchants: list[str] | None = None,
    duration_scale: float | None = None,
    phase_overrides: dict[str, dict] | None = None,
) -> list[dict]:
    """Return the phases of plan ``template`` ready for ``rollout_create``.

    Pilot and internal phases get ``pilot_merchants``. ``duration_scale``
    multiplies every duration (0.01 turns minutes into seconds for a demo).
    ``phase_overrides`` maps a phase name to fields replacing the plan's,
    e.g. ``{"50%": {"requires_approval": True}}``. Raise InvalidInput for
    an unknown plan or phase name.
    """
    plan = PLANS.get(template)
    if plan is None:
        raise InvalidInput(
            f"template: unknown plan {template!r} (known: {', '.join(sorted(PLANS))})",
            field="template",
        )
    if duration_scale is not None and (
        isinstance(duration_scale, bool)
        or not isinstance(duration_scale, (int, float))
        or not 0 < duration_scale <= 100
    ):
        raise InvalidInput(
            "duration_scale: must be a number in (0, 100]", field="duration_scale"
        )
    phases = copy.deepcopy(plan["phases"])
    names = {phase["name"] for phase in phases}
    for name in phase_overrides or {}:
        if name not in names:
            raise InvalidInput(
                f"phase_overrides.{name}: no such phase in {template} "
                f"({', '.join(p['name'] for p in phases)})",
                field=f"phase_overrides.{name}",
            )
    for phase in phases:
        if phase["target_type"] in (TargetType.PILOT, TargetType.INTERNAL):
            phase["pilot_merchants"] = list(pilot_merchants or [])
        if duration_scale is not None:
            for key in ("min_duration", "max_duration"):
                if phase.get(key) is not None:
                    phase[key] = max(1, round(phase[key] * duration_scale))
        phase.update((phase_overrides or {}).get(phase["name"], {}))
    return phases


def rollout_create_from_template(
    *,
    actor: Any,
    template: str,
    flag: Flag,
    environment: Environment,
    pilot_merchants: list[str] | None = None,
    checks: list[dict] | None = None,
    name: str | None = None,
    deployment: Any = None,
    treatment: str | None = None,
    control: str | None = None,
    duration_scale: float | None = None,
    phase_overrides: dict[str, dict] | None = None,
    max_level: Any = 3,
) -> Rollout:
    """Create a draft rollout from the named plan ``template``.

    See ``template_phases`` for the options and ``rollout_create`` for the
    rest; a pilot or internal phase without merchants is refused with
    field ``phases[0].pilot_merchants``. No ``checks`` (None) means the
    default check set, ``canary.templates_data.DEFAULT_CHECKS``; an empty
    list means none.
    """
    phases = template_phases(
        template,
        pilot_merchants=pilot_merchants,
        duration_scale=duration_scale,
        phase_overrides=phase_overrides,
    )
    return rollout_create(
        actor=actor,
        flag=flag,
        environment=environment,
        name=name or f"{flag.key} in {environment.key}: {template}",
        phases=phases,
        checks=copy.deepcopy(DEFAULT_CHECKS) if checks is None else checks,
        deployment=deployment,
        treatment=treatment,
        control=control,
        max_level=max_level,
    )
