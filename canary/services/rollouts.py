"""Rollouts: create, start, move through phases (approve, pause, resume and
abort are in ``canary.services.rollout_moves``).

Every function here takes ids or rows, locks the rollout row
(``select_for_update``), writes in one transaction with its audit event, and
is safe to call twice: a redelivered task changes nothing the second time.
``rollout_transition`` is the only code that assigns ``Rollout.status``.

The flag is moved only through ``flags.services`` (overrides for pilot and
internal phases, the fallthrough split for percentages), so every flag
change has its own audit event and bumps the ruleset version.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from canary import clock
from canary.exceptions import (
    Conflict,
    InvalidInput,
    RolloutAlreadyActive,
    RolloutInvalidTransition,
)
from canary.models import HealthCheck, Phase, Rollout, TargetType
from canary.services._common import OWNS_FLAG, Status, env_key, lock_rollout
from canary.services.check_templates import check_template_expand
from canary.services.checks import (
    checks_reset,
    rollout_check_summary,
    rollout_is_approved,
)
from canary.services.definitions import (
    checks_clean,
    deployment_clean,
    phases_clean,
    variations_clean,
)
from canary.services.flag_moves import (
    override_capture,
    overrides_restore,
    phase_apply,
)
from canary.services.rollout_baselines import baseline_summary, merchant_baseline_for
from canary.transitions import TERMINAL, is_allowed
from controlplane.audit.services import audited_transaction, record_audit_event
from flags import services as flag_services
from flags.models import Environment, Flag, FlagState, MerchantOverride

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
    max_level: Any = 3,
    check_template: str | None = None,
) -> Rollout:
    """Create a draft rollout of ``flag`` in ``environment`` with its phases
    and health checks (see ``phases_clean`` and ``checks_clean`` for their
    shape).

    ``max_level`` (1..3, default 3) is the highest rollback level the
    rollout may reach, by a check, by hand or by escalation; no check's
    ``on_failure`` may ask for more.

    ``check_template`` (``"name"`` or ``"name@3"``) adds that check
    template's checks before ``checks`` (names must not clash) and records
    ``name@version`` in ``Rollout.check_template``; see
    ``canary.services.check_templates``.

    ``treatment``/``control`` default to ``on``/``off`` for bool flags and
    are required otherwise. Raise InvalidInput (field-level) for bad input,
    Conflict for an archived flag or one without a state in the
    environment, RolloutAlreadyActive when another rollout of the flag runs
    there. Writes ``rollout.created``.
    """
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise InvalidInput(
            "name: a name of 1 to 200 characters is required", field="name"
        )
    if flag.archived:
        raise Conflict(f"flag {flag.key!r} is archived", field="flag")
    treatment, control = variations_clean(flag, treatment, control)
    clean_phases = phases_clean(phases)
    clean_checks = checks_clean(checks)
    template_reference = ""
    if check_template:
        clean_checks, template_reference = check_template_expand(
            check_template, clean_checks
        )
    deployment = deployment_clean(deployment, environment)
    if isinstance(max_level, bool) or max_level not in (1, 2, 3):
        raise InvalidInput("max_level: must be 1, 2 or 3", field="max_level")
    for i, check in enumerate(clean_checks):
        if check["on_failure"].startswith("rollback_") and (
            int(check["on_failure"].rsplit("_", 1)[1]) > max_level
        ):
            raise InvalidInput(
                f"checks[{i}].on_failure: {check['on_failure']} is above the rollout's "
                f"max_level {max_level}",
                field=f"checks[{i}].on_failure",
            )
    if deployment is None:
        for i, check in enumerate(clean_checks):
            if check["on_failure"] in ("rollback_2", "rollback_3"):
                raise InvalidInput(
                    f"checks[{i}].on_failure: {check['on_failure']} reverts a deployment, "
                    "and this rollout has none",
                    field=f"checks[{i}].on_failure",
                )
    with audited_transaction():
        if not FlagState.objects.filter(flag=flag, environment=environment).exists():
            raise Conflict(
                f"flag {flag.key!r} has no state in {environment.key!r}",
                field="environment",
            )
        busy = Rollout.objects.filter(
            flag=flag, environment=environment, status__in=OWNS_FLAG
        ).first()
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
            max_level=int(max_level),
            check_template=template_reference,
        )
        Phase.objects.bulk_create(
            [Phase(rollout=rollout, **phase) for phase in clean_phases]
        )
        HealthCheck.objects.bulk_create(
            [HealthCheck(rollout=rollout, **check) for check in clean_checks]
        )
        record_audit_event(
            actor=actor,
            action="rollout.created",
            target=rollout,
            environment=environment.key,
            after={
                "name": rollout.name,
                "flag": flag.key,
                "deployment": deployment.pk if deployment else None,
                "treatment": treatment,
                "control": control,
                "max_level": int(max_level),
                "check_template": template_reference,
                "phases": clean_phases,
                "checks": clean_checks,
            },
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
    pause, and keeps the phase's running time: only time spent ``running``
    counts toward ``min_duration`` and ``max_duration`` (leaving running
    banks the stretch in ``phase_running_seconds``, entering it starts a
    new one at ``phase_running_since``). Raise RolloutInvalidTransition (409) for a move the table
    refuses, Conflict for draft -> running outside ``rollout_start``.
    """
    if to not in Status.values:
        raise InvalidInput(f"to: must be one of {', '.join(Status.values)}", field="to")
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status == to:
            return rollout
        current = rollout.status
        if not is_allowed(current, to):
            raise RolloutInvalidTransition(current, to, rollout_id=rollout.pk)
        if (
            current == Status.DRAFT
            and to == Status.RUNNING
            and rollout.captured_state is None
        ):
            raise Conflict(
                "a draft starts through rollout_start (it captures the flag state)",
                field="status",
            )
        now = clock.now()
        rollout.status = to
        rollout.version += 1
        fields = ["status", "version", "updated_at"]
        if current == Status.RUNNING and rollout.phase_running_since is not None:
            rollout.phase_running_seconds += max(
                0.0, (now - rollout.phase_running_since).total_seconds()
            )
            rollout.phase_running_since = None
            fields += ["phase_running_seconds", "phase_running_since"]
        if to == Status.RUNNING:
            rollout.phase_running_since = now
            fields += ["phase_running_since"]
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
            actor=actor,
            action="rollout.transition",
            target=rollout,
            environment=env_key(rollout),
            before={"status": current},
            after={"status": to},
            details={
                "from": current,
                "to": to,
                "reason": reason,
                "phase": rollout.current_phase,
                **(details or {}),
            },
        )
        # A release follows its members, a pipeline its stages, in this transaction.
        from canary.services import pipelines, release_sync

        if rollout.release_id is not None:
            release_sync.release_sync(release_id=rollout.release_id, actor=actor)
        elif to in TERMINAL or to == Status.ROLLING_BACK:
            pipelines.pipeline_stage_finished(rollout_id=rollout.pk, actor=actor)
        if to == Status.RUNNING:
            # Started, approved or resumed: a gate may be open now, so tick
            # this rollout at once instead of waiting for the beat.
            transaction.on_commit(lambda pk=rollout.pk: _tick_soon(pk))
    return rollout


def _tick_soon(rollout_id: int) -> None:
    from canary.tasks import rollout_tick_soon

    rollout_tick_soon(rollout_id)


# Lifecycle ----------------------------------------------------------------


def rollout_start(
    *,
    rollout_id: int,
    actor: Any,
    reason: str = "",
    baseline: dict[str, float] | None = None,
    merchant_baseline: dict | None = None,
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
    Compare checks get each merchant's baseline captured first (outside
    the transaction: it reads the look-back's outcome events), unless the
    caller passes the ``merchant_baseline`` its preflight captured.
    """
    if merchant_baseline is None:
        merchant_baseline = merchant_baseline_for(rollout_id)
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status != Status.DRAFT:
            if rollout.started_at is not None and rollout.status not in TERMINAL:
                return rollout
            raise RolloutInvalidTransition(
                rollout.status, Status.RUNNING, rollout_id=rollout.pk
            )
        # Lock the flag state first: two rollouts of one flag cannot both start.
        state = (
            FlagState.objects.select_for_update()
            .filter(flag_id=rollout.flag_id, environment_id=rollout.environment_id)
            .first()
        )
        if state is None:
            raise Conflict(
                "the flag has no state in this environment", field="environment"
            )
        flag = Flag.objects.get(pk=rollout.flag_id)
        if flag.archived:
            raise Conflict(f"flag {flag.key!r} is archived", field="flag")
        busy = (
            Rollout.objects.filter(
                flag_id=rollout.flag_id,
                environment_id=rollout.environment_id,
                status__in=OWNS_FLAG,
            )
            .exclude(pk=rollout.pk)
            .first()
        )
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
                flag_id=rollout.flag_id,
                environment_id=rollout.environment_id,
                merchant__key__in=keys,
            ).select_related("merchant")
        }
        captured = {
            **flag_services.state_snapshot(state),
            "pilot_overrides": {
                key: override_capture(existing.get(key)) for key in keys
            },
        }
        now = clock.now()
        rollout.captured_state = captured
        rollout.started_at = now
        rollout.current_phase = 0
        rollout.phase_started_at = now
        # The transition to running starts the phase's running time.
        rollout.phase_running_seconds = 0.0
        rollout.phase_running_since = None
        if baseline:
            rollout.baseline = {**(rollout.baseline or {}), **baseline}
        if merchant_baseline is not None:
            rollout.merchant_baseline = merchant_baseline
        rollout.save(
            update_fields=[
                "merchant_baseline",
                "captured_state",
                "started_at",
                "current_phase",
                "phase_started_at",
                "phase_running_seconds",
                "phase_running_since",
                "baseline",
                "updated_at",
            ]
        )
        rollout = rollout_transition(
            rollout_id=rollout.pk,
            to=Status.RUNNING,
            actor=actor,
            reason=reason or "started",
            details={
                "captured_state": captured,
                **baseline_summary(merchant_baseline),
            },
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
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if (
            rollout.current_phase != expected_phase
            or rollout.status == Status.COMPLETED
        ):
            return rollout
        if rollout.status != Status.RUNNING:
            raise RolloutInvalidTransition(
                rollout.status, "the next phase", rollout_id=rollout.pk
            )
        phases = list(rollout.phases.order_by("index"))
        phase = phases[expected_phase]
        if phase.requires_approval and not rollout_is_approved(rollout):
            raise Conflict(
                f"phase {phase.index + 1} ({phase.name}) requires approval",
                field="approved_phase",
            )
        now = clock.now()
        if expected_phase == len(phases) - 1:
            summary = rollout_check_summary(rollout)
            rollout = rollout_transition(
                rollout_id=rollout.pk,
                to=Status.COMPLETED,
                actor=actor,
                reason=reason,
                details=details,
            )
            cleaned: list[str] = []
            if (
                phase.target_type == TargetType.PERCENTAGE
                and (phase.percentage or 0) >= 100
            ):
                # Everyone is on the treatment: pilot overrides would only pin
                # merchants against later changes of the flag.
                cleaned = overrides_restore(rollout, actor, "completed")
            record_audit_event(
                actor=actor,
                action="rollout.completed",
                target=rollout,
                environment=env_key(rollout),
                details={
                    "reason": reason,
                    "phases": len(phases),
                    "duration_seconds": (now - rollout.started_at).total_seconds()
                    if rollout.started_at
                    else None,
                    "checks": summary,
                    "override_problems": cleaned,
                },
            )
            return rollout
        new_index = expected_phase + 1
        new_phase = phases[new_index]
        rollout.current_phase = new_index
        rollout.phase_started_at = now
        # Only a running rollout advances: the new phase runs from now.
        rollout.phase_running_seconds = 0.0
        rollout.phase_running_since = now
        rollout.version += 1
        rollout.save(
            update_fields=[
                "current_phase",
                "phase_started_at",
                "phase_running_seconds",
                "phase_running_since",
                "version",
                "updated_at",
            ]
        )
        record_audit_event(
            actor=actor,
            action="rollout.phase_advanced",
            target=rollout,
            environment=env_key(rollout),
            before={"phase": expected_phase, "name": phase.name},
            after={
                "phase": new_index,
                "name": new_phase.name,
                "target_type": new_phase.target_type,
                "percentage": new_phase.percentage,
                "pilot_merchants": new_phase.pilot_merchants,
            },
            details={"reason": reason, **(details or {})},
        )
        phase_apply(rollout=rollout, index=new_index, actor=actor)
        checks_reset(rollout=rollout, phase_index=new_index, now=now)
    return rollout
