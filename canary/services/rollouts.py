"""Rollouts: create, start, move through phases, approve, pause, abort, roll back.

Every function here takes ids or rows, locks the rollout row
(``select_for_update``), writes in one transaction with its audit event, and
is safe to call twice: a redelivered task changes nothing the second time.
``rollout_transition`` is the only code that assigns ``Rollout.status``.

The flag is moved only through ``flags.services`` (overrides for pilot and
internal phases, the fallthrough split for percentages), so every flag
change has its own audit event and bumps the ruleset version.
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from canary.exceptions import (
    Conflict,
    InvalidInput,
    NotFound,
    RolloutAlreadyActive,
    RolloutInvalidTransition,
)
from canary.health import ON_FAILURE_SEVERITY
from canary.models import HealthCheck, Phase, Rollout, RolloutStatus, TargetType
from canary.services.checks import (
    checks_clean,
    checks_reset,
    rollout_check_summary,
    rollout_is_approved,
)
from canary.transitions import ACTIVE, TERMINAL, is_allowed
from controlplane.audit.services import record_audit_event
from flags import services as flag_services
from flags.exceptions import DomainError
from flags.models import Environment, Flag, FlagState, Merchant, MerchantOverride, ValueType

Status = RolloutStatus

_PHASE_FIELDS = {
    "name", "target_type", "percentage", "pilot_merchants", "min_duration", "max_duration",
    "requires_approval",
}
# Statuses in which a rollout owns its flag: no second rollout may start.
_OWNS_FLAG = ACTIVE | {Status.ROLLING_BACK}


# Validation ---------------------------------------------------------------


def _whole(value: Any, field: str, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and (not math.isfinite(value) or int(value) != value)
    ):
        raise InvalidInput(f"{field}: must be a whole number of seconds", field=field)
    if value < minimum:
        raise InvalidInput(f"{field}: must be at least {minimum}", field=field)
    return int(value)


def phases_clean(phases: Any) -> list[dict]:
    """Return phase definitions with defaults filled in, or raise InvalidInput.

    A phase is ``{"target_type": "pilot" | "percentage" | "internal",
    "percentage"?: 0..100, "pilot_merchants"?: [keys], "name"?,
    "min_duration"?: s, "max_duration"?: s, "requires_approval"?: bool}``;
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
        if not isinstance(raw, dict):
            raise InvalidInput(f"{prefix}: must be an object", field=prefix)
        for key in raw:
            if key not in _PHASE_FIELDS:
                raise InvalidInput(
                    f"{prefix}.{key}: unknown field (allowed: {', '.join(sorted(_PHASE_FIELDS))})",
                    field=f"{prefix}.{key}",
                )
        target_type = raw.get("target_type")
        if target_type is None:
            target_type = TargetType.PERCENTAGE if "percentage" in raw else TargetType.PILOT
        if target_type not in TargetType.values:
            raise InvalidInput(
                f"{prefix}.target_type: must be one of {', '.join(TargetType.values)}",
                field=f"{prefix}.target_type",
            )
        phase: dict[str, Any] = {"index": i, "target_type": target_type, "percentage": None,
                                 "pilot_merchants": []}
        if target_type == TargetType.PERCENTAGE:
            percentage = raw.get("percentage")
            if isinstance(percentage, bool) or not isinstance(percentage, (int, float)) or (
                isinstance(percentage, float) and not math.isfinite(percentage)
            ):
                raise InvalidInput(f"{prefix}.percentage: a number from 0 to 100 is required",
                                   field=f"{prefix}.percentage")
            if not 0 <= percentage <= 100:
                raise InvalidInput(f"{prefix}.percentage: must be between 0 and 100",
                                   field=f"{prefix}.percentage")
            if percentage < last_percentage:
                raise InvalidInput(
                    f"{prefix}.percentage: must not be lower than an earlier phase's "
                    f"({last_percentage:g}%)", field=f"{prefix}.percentage",
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
            known = dict(Merchant.objects.filter(key__in=keys).values_list("key", "is_active"))
            for key in keys:
                if key not in known:
                    raise InvalidInput(f"{prefix}.pilot_merchants: unknown merchant {key!r}",
                                       field=f"{prefix}.pilot_merchants")
                if not known[key]:
                    raise InvalidInput(f"{prefix}.pilot_merchants: merchant {key!r} is inactive",
                                       field=f"{prefix}.pilot_merchants")
            phase["pilot_merchants"] = keys
            all_keys.update(keys)
            default_name = str(target_type)
        name = raw.get("name", default_name)
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput(f"{prefix}.name: must be 1 to 100 characters",
                               field=f"{prefix}.name")
        phase["name"] = name.strip()
        phase["min_duration"] = _whole(raw.get("min_duration", 0), f"{prefix}.min_duration")
        max_duration = raw.get("max_duration")
        if max_duration is not None:
            max_duration = _whole(max_duration, f"{prefix}.max_duration")
            if max_duration < phase["min_duration"]:
                raise InvalidInput(f"{prefix}.max_duration: must not be below min_duration",
                                   field=f"{prefix}.max_duration")
        phase["max_duration"] = max_duration
        requires_approval = raw.get("requires_approval", False)
        if not isinstance(requires_approval, bool):
            raise InvalidInput(f"{prefix}.requires_approval: must be true or false",
                               field=f"{prefix}.requires_approval")
        phase["requires_approval"] = requires_approval
        cleaned.append(phase)
    return cleaned


def _variations(flag: Flag, treatment: str | None, control: str | None) -> tuple[str, str]:
    if flag.value_type == ValueType.BOOL:
        treatment, control = treatment or "on", control or "off"
    if not treatment or not control:
        raise InvalidInput("treatment: a non-bool flag needs a treatment and a control variation",
                           field="treatment")
    for name, key in (("treatment", treatment), ("control", control)):
        if key not in flag.variation_keys:
            raise InvalidInput(f"{name}: {key!r} is not a variation of {flag.key}", field=name)
    if treatment == control:
        raise InvalidInput("control: must differ from the treatment", field="control")
    return treatment, control


def _lock(rollout_id: int) -> Rollout:
    rollout = Rollout.objects.select_for_update().filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound(f"unknown rollout {rollout_id}", field="rollout")
    return rollout


def _env_key(rollout: Rollout) -> str:
    return Environment.objects.filter(pk=rollout.environment_id).values_list(
        "key", flat=True
    ).get()


def _deployment(deployment: Any, environment: Environment) -> Any:
    """Return the Deployment row for ``deployment`` (a row or an id)."""
    if deployment is None:
        return None
    from rollback.models import Deployment

    pk = deployment.pk if isinstance(deployment, Deployment) else deployment
    row = Deployment.objects.filter(pk=pk).first() if isinstance(pk, int) else None
    if row is None:
        raise InvalidInput(f"deployment: unknown deployment {deployment!r}", field="deployment")
    if row.environment_id != environment.pk:
        raise InvalidInput(
            f"deployment: deployment {row.pk} is not in {environment.key}", field="deployment"
        )
    return row


# Creation -----------------------------------------------------------------


def rollout_create(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    name: str,
    phases: list[dict],
    checks: list[dict] | None = None,
    deployment: Any = None,
    treatment: str | None = None,
    control: str | None = None,
) -> Rollout:
    """Create a draft rollout of ``flag`` in ``environment`` with its phases
    and health checks (see ``phases_clean`` and ``checks_clean`` for their
    shape).

    ``treatment``/``control`` default to ``on``/``off`` for bool flags and
    are required otherwise. Raise InvalidInput (field-level) for bad input,
    Conflict for an archived flag or one without a state in the
    environment, RolloutAlreadyActive when another rollout of the flag runs
    there. Writes ``rollout.created``.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidInput("name: a name of 1 to 200 characters is required", field="name")
    if flag.archived:
        raise Conflict(f"flag {flag.key!r} is archived", field="flag")
    treatment, control = _variations(flag, treatment, control)
    clean_phases = phases_clean(phases)
    clean_checks = checks_clean(checks)
    deployment = _deployment(deployment, environment)
    if deployment is None:
        for i, check in enumerate(clean_checks):
            if check["on_failure"] in ("rollback_2", "rollback_3"):
                raise InvalidInput(
                    f"checks[{i}].on_failure: {check['on_failure']} reverts a deployment, "
                    "and this rollout has none", field=f"checks[{i}].on_failure",
                )
    with transaction.atomic():
        if not FlagState.objects.filter(flag=flag, environment=environment).exists():
            raise Conflict(f"flag {flag.key!r} has no state in {environment.key!r}",
                           field="environment")
        busy = Rollout.objects.filter(flag=flag, environment=environment,
                                      status__in=_OWNS_FLAG).first()
        if busy is not None:
            raise RolloutAlreadyActive(
                f"rollout {busy.pk} of {flag.key} in {environment.key} is {busy.status}",
                field="flag",
            )
        rollout = Rollout.objects.create(
            flag=flag,
            environment=environment,
            name=name.strip(),
            treatment_variation=treatment,
            control_variation=control,
            created_by=getattr(actor, "name", "") or str(actor),
            deployment=deployment,
        )
        Phase.objects.bulk_create([Phase(rollout=rollout, **phase) for phase in clean_phases])
        HealthCheck.objects.bulk_create(
            [HealthCheck(rollout=rollout, **check) for check in clean_checks]
        )
        record_audit_event(
            actor=actor, action="rollout.created", target=rollout, environment=environment.key,
            after={
                "name": rollout.name,
                "flag": flag.key,
                "deployment": deployment.pk if deployment else None,
                "treatment": treatment,
                "control": control,
                "phases": clean_phases,
                "checks": clean_checks,
            },
        )
    return rollout


def rollout_set_baseline(*, rollout_id: int, actor: Any, baseline: dict[str, float]) -> Rollout:
    """Record the values measured before start, per check name (relative
    mode compares with them). Only for a draft; unknown names are refused."""
    if not isinstance(baseline, dict):
        raise InvalidInput("baseline: must be an object of check name -> value", field="baseline")
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status != Status.DRAFT:
            raise Conflict(f"rollout {rollout.pk} is {rollout.status}: the baseline is fixed "
                           "once it starts", field="baseline")
        names = set(rollout.checks.values_list("name", flat=True))
        for key, value in baseline.items():
            if key not in names:
                raise InvalidInput(f"baseline.{key}: no check of that name", field=f"baseline.{key}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise InvalidInput(f"baseline.{key}: must be a number", field=f"baseline.{key}")
        before = dict(rollout.baseline or {})
        rollout.baseline = {**before, **baseline}
        rollout.version += 1
        rollout.save(update_fields=["baseline", "version", "updated_at"])
        record_audit_event(
            actor=actor, action="rollout.baseline_set", target=rollout,
            environment=_env_key(rollout), before=before, after=rollout.baseline,
        )
    return rollout


# The status machine -------------------------------------------------------


def rollout_transition(
    *,
    rollout_id: int,
    to: str,
    actor: Any,
    reason: str,
    details: dict | None = None,
) -> Rollout:
    """Move the rollout to status ``to``; the only code that assigns status.

    Locks the row, checks ``canary.transitions.ALLOWED``, saves and writes
    one ``rollout.transition`` audit event with from/to/reason/details.
    Already in ``to`` (a redelivered task): return it unchanged, no event.
    Sets ``finished_at`` on a terminal status and ``pause_reason`` on
    pause. Raise RolloutInvalidTransition (409) for a move the table
    refuses, Conflict for draft -> running outside ``rollout_start``.
    """
    if to not in Status.values:
        raise InvalidInput(f"to: must be one of {', '.join(Status.values)}", field="to")
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status == to:
            return rollout
        current = rollout.status
        if not is_allowed(current, to):
            raise RolloutInvalidTransition(current, to, rollout_id=rollout.pk)
        if current == Status.DRAFT and to == Status.RUNNING and rollout.captured_state is None:
            raise Conflict("a draft starts through rollout_start (it captures the flag state)",
                           field="status")
        now = timezone.now()
        rollout.status = to
        rollout.version += 1
        fields = ["status", "version", "updated_at"]
        if to == Status.PAUSED:
            rollout.pause_reason = (reason or "")[:500]
            fields.append("pause_reason")
        elif current == Status.PAUSED:
            rollout.pause_reason = ""
            fields.append("pause_reason")
        if to in TERMINAL:
            rollout.finished_at = now
            fields.append("finished_at")
        rollout.save(update_fields=fields)
        record_audit_event(
            actor=actor, action="rollout.transition", target=rollout,
            environment=_env_key(rollout),
            before={"status": current}, after={"status": to},
            details={"from": current, "to": to, "reason": reason,
                     "phase": rollout.current_phase, **(details or {})},
        )
    return rollout


# Moving the flag ----------------------------------------------------------


def _override_capture(override: MerchantOverride | None) -> dict | None:
    if override is None:
        return None
    return {
        "variation": override.variation,
        "note": override.note,
        "expires_at": override.expires_at.isoformat() if override.expires_at else None,
    }


def phase_apply(*, rollout: Rollout, index: int, actor: Any) -> None:
    """Make phase ``index`` of ``rollout`` live on the flag, through
    ``flags.services`` (each change audited and announced).

    Pilot and internal phases give their merchants the treatment variation
    by override; a percentage phase serves the treatment to that share
    (100% serves it to everyone). A disabled flag is enabled first, serving
    the control variation to everyone else. Idempotent: an unchanged target
    writes nothing. Call inside the rollout's transaction.
    """
    phase = rollout.phases.get(index=index)
    flag = Flag.objects.get(pk=rollout.flag_id)
    environment = Environment.objects.get(pk=rollout.environment_id)
    treatment, control = rollout.treatment_variation, rollout.control_variation
    state = FlagState.objects.get(flag=flag, environment=environment)
    if not state.enabled:
        flag_services.flag_state_update(
            actor=actor, flag=flag, environment=environment, expected_version=None,
            enabled=True, fallthrough={"variation": control},
        )
    if phase.target_type in (TargetType.PILOT, TargetType.INTERNAL):
        merchants = Merchant.objects.filter(key__in=phase.pilot_merchants).order_by("key")
        for merchant in merchants:
            flag_services.override_set(
                actor=actor, flag=flag, environment=environment, merchant=merchant,
                variation=treatment, note=f"rollout {rollout.pk}: phase {phase.name}",
            )
    elif phase.percentage is not None and phase.percentage >= 100:
        flag_services.flag_state_serve(
            actor=actor, flag=flag, environment=environment, variation=treatment
        )
    else:
        flag_services.flag_state_set_percentage(
            actor=actor, flag=flag, environment=environment, percentage=phase.percentage or 0,
            treatment=treatment, control=control,
        )


def _overrides_restore(rollout: Rollout, actor: Any, reason: str) -> list[str]:
    """Put the pilot merchants' overrides back as they were at start.

    Remove the overrides the rollout added; put back ones it replaced.
    Return what could not be restored (e.g. a merchant deactivated since).
    """
    prior = (rollout.captured_state or {}).get("pilot_overrides") or {}
    if not prior:
        return []
    flag = Flag.objects.get(pk=rollout.flag_id)
    environment = Environment.objects.get(pk=rollout.environment_id)
    merchants = {m.key: m for m in Merchant.objects.filter(key__in=list(prior))}
    problems: list[str] = []
    now = timezone.now()
    for key in sorted(prior):
        merchant = merchants.get(key)
        if merchant is None:
            continue  # deleted merchant: its overrides went with it
        before = prior[key]
        current = MerchantOverride.objects.filter(
            flag=flag, environment=environment, merchant=merchant
        ).first()
        try:
            if before is None:
                if current is not None:
                    flag_services.override_remove(
                        actor=actor, flag=flag, environment=environment, merchant=merchant,
                        reason=f"rollout {rollout.pk}: {reason}",
                    )
                continue
            expires_at = parse_datetime(before["expires_at"]) if before.get("expires_at") else None
            if expires_at is not None and expires_at <= now:
                if current is not None:
                    flag_services.override_remove(
                        actor=actor, flag=flag, environment=environment, merchant=merchant,
                        reason=f"rollout {rollout.pk}: {reason} (earlier override has expired)",
                    )
                continue
            flag_services.override_set(
                actor=actor, flag=flag, environment=environment, merchant=merchant,
                variation=before["variation"], note=before.get("note", ""),
                expires_at=expires_at,
            )
        except DomainError as exc:
            problems.append(f"{key}: {exc.message}")
    return problems


def _flag_restore(rollout: Rollout, actor: Any, reason: str) -> list[str]:
    """Restore the flag state and pilot overrides captured at start."""
    captured = rollout.captured_state
    if not captured:
        return []
    problems = _overrides_restore(rollout, actor, reason)
    flag_services.flag_state_restore_snapshot(
        actor=actor,
        flag=Flag.objects.get(pk=rollout.flag_id),
        environment=Environment.objects.get(pk=rollout.environment_id),
        snapshot=captured,
        reason=f"rollout {rollout.pk}: {reason}",
    )
    return problems


# Lifecycle ----------------------------------------------------------------


def rollout_start(
    *,
    rollout_id: int,
    actor: Any,
    reason: str = "",
    baseline: dict[str, float] | None = None,
) -> Rollout:
    """Start a draft: capture the flag state, go running, make phase 0 live.

    ``captured_state`` is ``flags.services.state_snapshot`` of the flag
    state (so ``flag_state_restore_snapshot`` accepts it as is) plus
    ``pilot_overrides``: for each merchant any pilot/internal phase will
    target, the override it had before (None = none). That is what an
    abort and a level-1 rollback restore. Preflight (checks answer once,
    rollback levels possible) is the caller's job before this. Already
    started (a redelivery): return it unchanged. Raise
    RolloutInvalidTransition for a finished rollout, RolloutAlreadyActive
    when another rollout owns the flag, Conflict for an archived flag.
    """
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status != Status.DRAFT:
            if rollout.started_at is not None and rollout.status not in TERMINAL:
                return rollout
            raise RolloutInvalidTransition(rollout.status, Status.RUNNING, rollout_id=rollout.pk)
        # Lock the flag state first: two rollouts of one flag cannot both start.
        state = FlagState.objects.select_for_update().filter(
            flag_id=rollout.flag_id, environment_id=rollout.environment_id
        ).first()
        if state is None:
            raise Conflict("the flag has no state in this environment", field="environment")
        flag = Flag.objects.get(pk=rollout.flag_id)
        if flag.archived:
            raise Conflict(f"flag {flag.key!r} is archived", field="flag")
        busy = Rollout.objects.filter(
            flag_id=rollout.flag_id, environment_id=rollout.environment_id,
            status__in=_OWNS_FLAG,
        ).exclude(pk=rollout.pk).first()
        if busy is not None:
            raise RolloutAlreadyActive(
                f"rollout {busy.pk} of {flag.key} is {busy.status}", field="flag"
            )
        keys: list[str] = []
        for phase in rollout.phases.order_by("index"):
            keys.extend(k for k in phase.pilot_merchants if k not in keys)
        existing = {
            o.merchant.key: o
            for o in MerchantOverride.objects.filter(
                flag_id=rollout.flag_id, environment_id=rollout.environment_id,
                merchant__key__in=keys,
            ).select_related("merchant")
        }
        captured = {
            **flag_services.state_snapshot(state),
            "pilot_overrides": {key: _override_capture(existing.get(key)) for key in keys},
        }
        now = timezone.now()
        rollout.captured_state = captured
        rollout.started_at = now
        rollout.current_phase = 0
        rollout.phase_started_at = now
        if baseline:
            rollout.baseline = {**(rollout.baseline or {}), **baseline}
        rollout.save(update_fields=["captured_state", "started_at", "current_phase",
                                    "phase_started_at", "baseline", "updated_at"])
        rollout = rollout_transition(
            rollout_id=rollout.pk, to=Status.RUNNING, actor=actor,
            reason=reason or "started", details={"captured_state": captured},
        )
        phase_apply(rollout=rollout, index=0, actor=actor)
        checks_reset(rollout=rollout, phase_index=0, now=now)
    return rollout


def rollout_advance(
    *,
    rollout_id: int,
    expected_phase: int,
    actor: Any,
    reason: str,
    details: dict | None = None,
) -> Rollout:
    """Leave phase ``expected_phase``: make the next phase live, or complete.

    Keyed by ``(rollout_id, expected_phase)``: if the rollout is no longer
    in that phase (a duplicate delivery), return it unchanged. Only a
    running rollout advances, and only with approval where the phase needs
    it. The next phase writes ``rollout.phase_advanced`` and resets the
    checks' per-phase counters; the last phase completes the rollout
    (``rollout.transition`` and ``rollout.completed`` with each check's
    summary metrics) and, when it served 100%, removes the pilot overrides
    the rollout added. Raise RolloutInvalidTransition when not running,
    Conflict when approval is missing.
    """
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.current_phase != expected_phase or rollout.status == Status.COMPLETED:
            return rollout
        if rollout.status != Status.RUNNING:
            raise RolloutInvalidTransition(rollout.status, "the next phase",
                                           rollout_id=rollout.pk)
        phases = list(rollout.phases.order_by("index"))
        phase = phases[expected_phase]
        if phase.requires_approval and not rollout_is_approved(rollout):
            raise Conflict(f"phase {phase.index} ({phase.name}) requires approval",
                           field="approved_phase")
        now = timezone.now()
        if expected_phase == len(phases) - 1:
            summary = rollout_check_summary(rollout)
            rollout = rollout_transition(
                rollout_id=rollout.pk, to=Status.COMPLETED, actor=actor, reason=reason,
                details=details,
            )
            cleaned: list[str] = []
            if phase.target_type == TargetType.PERCENTAGE and (phase.percentage or 0) >= 100:
                # Everyone is on the treatment: pilot overrides would only pin
                # merchants against later changes of the flag.
                cleaned = _overrides_restore(rollout, actor, "completed")
            record_audit_event(
                actor=actor, action="rollout.completed", target=rollout,
                environment=_env_key(rollout),
                details={
                    "reason": reason,
                    "phases": len(phases),
                    "duration_seconds": (now - rollout.started_at).total_seconds()
                    if rollout.started_at else None,
                    "checks": summary,
                    "override_problems": cleaned,
                },
            )
            return rollout
        new_index = expected_phase + 1
        new_phase = phases[new_index]
        rollout.current_phase = new_index
        rollout.phase_started_at = now
        rollout.version += 1
        rollout.save(update_fields=["current_phase", "phase_started_at", "version", "updated_at"])
        record_audit_event(
            actor=actor, action="rollout.phase_advanced", target=rollout,
            environment=_env_key(rollout),
            before={"phase": expected_phase, "name": phase.name},
            after={"phase": new_index, "name": new_phase.name,
                   "target_type": new_phase.target_type, "percentage": new_phase.percentage,
                   "pilot_merchants": new_phase.pilot_merchants},
            details={"reason": reason, **(details or {})},
        )
        phase_apply(rollout=rollout, index=new_index, actor=actor)
        checks_reset(rollout=rollout, phase_index=new_index, now=now)
    return rollout


def rollout_approve(
    *,
    rollout_id: int,
    actor: Any,
    reason: str = "",
    expected_phase: int | None = None,
) -> Rollout:
    """Approve leaving the current phase; awaiting_approval -> running.

    May be given ahead of time while running or paused. With
    ``expected_phase``, an approval meant for another phase is ignored (the
    rollout moved on). Already approved: no new event (only the move to
    running if still awaiting). Writes ``rollout.approved``. Raise
    RolloutInvalidTransition for a rollout that is not in progress.
    """
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status not in ACTIVE:
            raise RolloutInvalidTransition(rollout.status, "approved", rollout_id=rollout.pk)
        if expected_phase is not None and expected_phase != rollout.current_phase:
            return rollout
        if not rollout_is_approved(rollout):
            before = rollout.approved_phase
            rollout.approved_phase = rollout.current_phase
            rollout.version += 1
            rollout.save(update_fields=["approved_phase", "version", "updated_at"])
            record_audit_event(
                actor=actor, action="rollout.approved", target=rollout,
                environment=_env_key(rollout),
                before={"approved_phase": before},
                after={"approved_phase": rollout.approved_phase},
                details={"reason": reason, "phase": rollout.current_phase},
            )
        if rollout.status == Status.AWAITING_APPROVAL:
            rollout = rollout_transition(
                rollout_id=rollout.pk, to=Status.RUNNING, actor=actor,
                reason=f"approved: {reason}" if reason else "approved",
            )
    return rollout


def rollout_pause(*, rollout_id: int, actor: Any, reason: str, details: dict | None = None
                  ) -> Rollout:
    """Pause the rollout (checks keep running; a failure still acts).
    Already paused: unchanged. Raise RolloutInvalidTransition otherwise."""
    return rollout_transition(rollout_id=rollout_id, to=Status.PAUSED, actor=actor,
                              reason=reason, details=details)


def rollout_resume(*, rollout_id: int, actor: Any, reason: str = "") -> Rollout:
    """Resume a paused rollout: running again, the current phase's check
    counters start afresh (past failures, inconclusive and error counts are
    cleared; their check runs are kept) and checks are due now. Already
    running: unchanged. Raise RolloutInvalidTransition unless paused."""
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status == Status.RUNNING:
            return rollout
        if rollout.status != Status.PAUSED:
            raise RolloutInvalidTransition(rollout.status, Status.RUNNING, rollout_id=rollout.pk)
        rollout = rollout_transition(rollout_id=rollout.pk, to=Status.RUNNING, actor=actor,
                                     reason=reason or "resumed")
        checks_reset(rollout=rollout, phase_index=rollout.current_phase, now=timezone.now())
    return rollout


def rollout_abort(*, rollout_id: int, actor: Any, reason: str) -> Rollout:
    """Abort: status aborted, and (if it started) the flag state and pilot
    overrides are put back as captured at start, in the same transaction.
    Already aborted: unchanged. Raise RolloutInvalidTransition for a
    completed, rolling-back or rolled-back rollout."""
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status == Status.ABORTED:
            return rollout
        if not is_allowed(rollout.status, Status.ABORTED):
            raise RolloutInvalidTransition(rollout.status, Status.ABORTED, rollout_id=rollout.pk)
        problems = _flag_restore(rollout, actor, f"aborted: {reason}")
        rollout = rollout_transition(
            rollout_id=rollout.pk, to=Status.ABORTED, actor=actor, reason=reason,
            details={"restored": rollout.captured_state is not None,
                     "restore_problems": problems},
        )
    return rollout


def _most_severe_on_failure(rollout: Rollout) -> str:
    actions = list(rollout.checks.values_list("on_failure", flat=True)) or ["rollback_1"]
    return max(actions, key=lambda action: ON_FAILURE_SEVERITY.get(action, 1))


def rollout_fail_phase(
    *,
    rollout_id: int,
    actor: Any,
    reason: str,
    on_failure: str | None = None,
    details: dict | None = None,
) -> Rollout:
    """Fail the current phase and act on it: pause, or roll back.

    ``on_failure`` (pause, rollback_1..3) defaults to the most severe
    ``on_failure`` of the rollout's checks (rollback_1 without checks).
    Writes ``rollout.phase_failed``, then the transition. Usable by an
    operator at any moment and by the controller when a check fails.
    Raise RolloutInvalidTransition unless running, awaiting approval or
    paused; InvalidInput for an unknown on_failure.
    """
    if on_failure is not None and on_failure not in ON_FAILURE_SEVERITY:
        raise InvalidInput(f"on_failure: must be one of {', '.join(ON_FAILURE_SEVERITY)}",
                           field="on_failure")
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK):
            return rollout  # already being put back: a duplicate
        if rollout.status not in ACTIVE:
            raise RolloutInvalidTransition(rollout.status, "failed", rollout_id=rollout.pk)
        action = on_failure or _most_severe_on_failure(rollout)
        record_audit_event(
            actor=actor, action="rollout.phase_failed", target=rollout,
            environment=_env_key(rollout),
            details={"phase": rollout.current_phase, "on_failure": action, "reason": reason,
                     **(details or {})},
        )
        if action == "pause":
            if rollout.status != Status.PAUSED:
                rollout = rollout_transition(rollout_id=rollout.pk, to=Status.PAUSED,
                                             actor=actor, reason=reason, details=details)
            return rollout
        return rollout_begin_rollback(
            rollout_id=rollout.pk, level=int(action.rsplit("_", 1)[1]), actor=actor,
            reason=reason, details=details,
        )


def rollout_begin_rollback(
    *,
    rollout_id: int,
    level: int,
    actor: Any,
    reason: str,
    details: dict | None = None,
) -> Rollout:
    """Move to rolling_back and hand the rollback to the rollback engine.

    In one transaction: the transition (audited with the level), the pilot
    overrides put back as captured (the rollback engine restores flag
    states, not overrides), and ``rollback.services.rollback_run_start``
    with the captured flag state as ``flag_restore``. The rollout stays
    rolling_back until ``rollout_rollback_finished``. Without a rollback
    engine installed, restore the captured flag state directly and go
    rolled_back. Already rolling back or rolled back: unchanged (no second
    run). Raise InvalidInput for a level outside 1..3,
    RolloutInvalidTransition from draft or a finished status.
    """
    if level not in (1, 2, 3):
        raise InvalidInput("level: must be 1, 2 or 3", field="level")
    try:
        from rollback.services import rollback_run_start
    except ImportError:
        rollback_run_start = None
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK):
            return rollout
        rollout = rollout_transition(
            rollout_id=rollout.pk, to=Status.ROLLING_BACK, actor=actor, reason=reason,
            details={"level": level, **(details or {})},
        )
        problems = _overrides_restore(rollout, actor, f"rollback: {reason}")
        if rollback_run_start is None:
            problems += _flag_restore(rollout, actor, f"rollback: {reason}")
            return rollout_transition(
                rollout_id=rollout.pk, to=Status.ROLLED_BACK, actor=actor,
                reason="flag state restored (no rollback engine installed)",
                details={"level": 1, "restore_problems": problems},
            )
        flag_restore = {
            "flag": Flag.objects.get(pk=rollout.flag_id),
            "environment": Environment.objects.get(pk=rollout.environment_id),
            # Pilot overrides were put back above; the run restores the state.
            "snapshot": rollout.captured_state,
        }
        run_level = level if rollout.deployment_id is not None else 1
        try:
            # A savepoint: a refused run (preflight) must not undo the rest.
            with transaction.atomic():
                run = rollback_run_start(
                    actor=actor, level=run_level, reason=reason,
                    deployment=rollout.deployment, flag_restore=flag_restore,
                    trigger="rollout", trigger_ref=str(rollout.pk),
                )
        except DomainError as exc:
            if run_level == 1:
                raise
            # Reverting the deployment is impossible: still put the flag back.
            refused = exc.message
            run_level = 1
            run = rollback_run_start(
                actor=actor, level=1, reason=f"{reason} (level {level} refused: {refused})",
                deployment=rollout.deployment, flag_restore=flag_restore,
                trigger="rollout", trigger_ref=str(rollout.pk),
            )
        record_audit_event(
            actor=actor, action="rollout.rollback_started", target=rollout,
            environment=_env_key(rollout),
            details={
                "requested_level": level,
                "level": run_level,
                "rollback_run": run.pk,
                "override_problems": problems,
                "reason": reason,
            },
        )
    return rollout


def rollout_rollback_finished(
    *,
    rollout_id: int,
    actor: Any,
    succeeded: bool,
    reason: str = "",
    details: dict | None = None,
) -> Rollout:
    """Record the end of the rollout's rollback run.

    Succeeded: rolling_back -> rolled_back. Failed: stays rolling_back with a
    ``rollout.rollback_failed`` audit event (an operator must act). Already
    rolled back: unchanged. Raise RolloutInvalidTransition otherwise.
    """
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.status == Status.ROLLED_BACK:
            return rollout
        if rollout.status != Status.ROLLING_BACK:
            raise RolloutInvalidTransition(rollout.status, Status.ROLLED_BACK,
                                           rollout_id=rollout.pk)
        if succeeded:
            return rollout_transition(rollout_id=rollout.pk, to=Status.ROLLED_BACK, actor=actor,
                                      reason=reason or "rollback finished", details=details)
        record_audit_event(
            actor=actor, action="rollout.rollback_failed", target=rollout,
            environment=_env_key(rollout), details={"reason": reason, **(details or {})},
        )
    return rollout


def rollout_restore_flag(*, rollout_id: int, actor: Any, reason: str) -> list[str]:
    """Put the flag state and pilot overrides back as captured at start
    (what a level-1 rollback does), without changing the rollout's status.
    Return what could not be restored. For the controller and tools."""
    with transaction.atomic():
        rollout = _lock(rollout_id)
        if rollout.captured_state is None:
            raise Conflict(f"rollout {rollout.pk} never started: nothing to restore",
                           field="rollout")
        return _flag_restore(rollout, actor, reason)


def rollout_phase_elapsed(rollout: Rollout, now: dt.datetime | None = None) -> float:
    """Return the seconds since the current phase went live (0 if not)."""
    if rollout.phase_started_at is None:
        return 0.0
    return ((now or timezone.now()) - rollout.phase_started_at).total_seconds()
