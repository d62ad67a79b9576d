"""After a rollback: the verification window, automatic escalation, and
the operator's stop (docs/canary.md, "After a rollback: verify and
escalate").

The state lives on the rollout: ``verification_state`` (indexed: the
controller claims the open windows) and ``verification``::

    {"captured_at": iso, "phase": n,            # at the rollback
     "merchants": [key, ...],                   # treated at the rollback
     "level": L, "rollback_run": id,            # the run being verified
     "since": iso, "until": iso,                # the window
     "escalation_run": id | None,               # while escalating
     "reason": "...",                           # the last decision
     "history": [{"level", "state", "at", "reason"}, ...]}

``verification_capture`` stores the treated merchants when the rollback
begins (``rollout_begin_rollback``); ``verification_open`` opens a window
once a rollback run of the rollout succeeded (``rollout_rollback_finished``
for the first run, the controller for an escalation's); the controller
(``canary.controller.verify``) measures and decides, then calls
``rollout_verification_escalate`` or ``rollout_verification_conclude``.
Every change is audited in its own transaction; the window's ``since`` is
the idempotency key, so a duplicate decision is a no-op.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from canary import clock
from canary.exceptions import Conflict
from canary.models import (
    CheckMode,
    CheckRun,
    HealthCheck,
    OutcomeEvent,
    Rollout,
    RolloutStatus,
    VerificationState,
)
from canary.services._common import env_key, lock_rollout
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.conf import setting
from controlplane.exceptions import DomainError

Status = RolloutStatus
State = VerificationState
OPEN = frozenset({State.VERIFYING, State.ESCALATING})
CONCLUSIONS: dict[str, str] = {
    State.RECOVERED: "rollout.verified",
    State.ENDED: "rollout.verification_ended",
    State.EXHAUSTED: "rollout.verification_exhausted",
    State.STOPPED: "rollout.verification_stopped",
    State.FAILED: "rollout.verification_failed",
}
HISTORY_LIMIT = 20


def verification_checks(rollout: Rollout) -> list[HealthCheck]:
    """Return the checks a window measures: compare mode, not dry-run."""
    return list(
        HealthCheck.objects.filter(
            rollout_id=rollout.pk, mode=CheckMode.COMPARE, dry_run=False
        ).order_by("id")
    )


def treated_merchants(rollout: Rollout, until: dt.datetime) -> list[str]:
    """Return the keys of the merchants the rollout treated until ``until``.

    Those that reported an outcome with the treatment variation since the
    rollout started, and the pilot merchants of the phases it reached (a
    pilot without events yet is still treated).
    """
    keys: set[str] = set()
    if rollout.started_at is not None and rollout.treatment_variation:
        keys.update(
            OutcomeEvent.objects.filter(
                environment_id=rollout.environment_id,
                flag_key=rollout.flag.key,
                variation=rollout.treatment_variation,
                occurred_at__gte=rollout.started_at,
                occurred_at__lte=until,
            )
            .order_by()
            .values_list("merchant_key", flat=True)
            .distinct()
        )
    for pilots in rollout.phases.filter(index__lte=rollout.current_phase).values_list(
        "pilot_merchants", flat=True
    ):
        keys.update(str(key) for key in pilots or [])
    return sorted(keys)


def verification_capture(rollout: Rollout) -> int:
    """Store which merchants are treated now that ``rollout`` rolls back.

    Call inside the rollback's transaction with the rollout locked (its
    audit event covers this write); return the number of merchants.
    """
    now = clock.now()
    merchants = treated_merchants(rollout, now)
    rollout.verification = {
        "captured_at": now.isoformat(),
        "phase": rollout.current_phase,
        "merchants": merchants,
    }
    rollout.verification_state = State.NONE
    rollout.save(update_fields=["verification", "verification_state", "updated_at"])
    return len(merchants)


def _history(v: dict, state: str, reason: str, now: dt.datetime) -> list[dict]:
    entry = {
        "level": v.get("level"),
        "state": state,
        "at": now.isoformat(),
        "reason": reason[:500],
    }
    return [*(v.get("history") or []), entry][-HISTORY_LIMIT:]


def _skip_reason(rollout: Rollout, checks: list[HealthCheck], v: dict) -> str:
    if float(setting("CANARY_VERIFY_SECONDS")) <= 0:
        return "verification is off (CANARY_VERIFY_SECONDS = 0)"
    if not checks:
        return "no compare check (mode compare, not dry-run) to verify with"
    if not v.get("merchants"):
        return "no treated merchant recorded at the rollback"
    return ""


def verification_open(*, rollout_id: int, run_id: int, actor: Any) -> Rollout:
    """Open the verification window of rollback run ``run_id`` (succeeded).

    Inside the transaction that records the run's success, or on its own:
    the window starts now for CANARY_VERIFY_SECONDS, at the run's level,
    and the compare checks are due at once. A window of the same run
    already opened: unchanged (a duplicate). Nothing to verify with (the
    setting is 0, no compare check, no treated merchant): nothing is
    written, or an open window is closed as ended. Writes
    ``rollout.verification_started``. Raise Conflict unless the rollout
    is rolled back and the run is one of its succeeded runs.
    """
    from rollback.models import RollbackRun, RunStatus, Trigger

    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        v = dict(rollout.verification or {})
        if v.get("rollback_run") == run_id:
            return rollout
        if rollout.status != Status.ROLLED_BACK:
            raise Conflict(
                f"rollout {rollout.pk} is {rollout.status}: only a rolled-back rollout "
                "is verified",
                field="status",
            )
        run = RollbackRun.objects.filter(
            pk=run_id, trigger=Trigger.ROLLOUT, trigger_ref=str(rollout.pk)
        ).first()
        if run is None or run.status != RunStatus.SUCCEEDED:
            raise Conflict(
                f"rollback run {run_id} of rollout {rollout.pk} has not succeeded",
                field="rollback_run",
            )
        checks = verification_checks(rollout)
        skipped = _skip_reason(rollout, checks, v)
        if skipped:
            if rollout.verification_state in OPEN:
                return _conclude(rollout, v, State.ENDED, skipped, {}, actor)
            return rollout
        now = clock.now()
        seconds = float(setting("CANARY_VERIFY_SECONDS"))
        until = now + dt.timedelta(seconds=seconds)
        reason = (
            f"verifying the level {run.level} rollback (run {run.pk}): "
            f"{len(v['merchants'])} formerly treated merchants against their own "
            f"baselines until {until.isoformat()}"
        )
        before = rollout.verification_state
        v.update(
            level=run.level,
            rollback_run=run.pk,
            since=now.isoformat(),
            until=until.isoformat(),
            escalation_run=None,
            reason=reason,
        )
        v["history"] = _history(v, State.VERIFYING, reason, now)
        rollout.verification = v
        rollout.verification_state = State.VERIFYING
        rollout.save(update_fields=["verification", "verification_state", "updated_at"])
        HealthCheck.objects.filter(pk__in=[c.pk for c in checks]).update(
            next_due_at=now
        )
        record_audit_event(
            actor=actor,
            action="rollout.verification_started",
            target=rollout,
            environment=env_key(rollout),
            before={"verification_state": before},
            after={"verification_state": State.VERIFYING},
            details={
                "level": run.level,
                "rollback_run": run.pk,
                "since": v["since"],
                "until": v["until"],
                "seconds": seconds,
                "merchants": len(v["merchants"]),
                "checks": [c.name for c in checks],
                "phase": v.get("phase"),
                "auto_escalate": rollout.auto_escalate,
                "reason": reason,
            },
        )
    return rollout


def _conclude(
    rollout: Rollout, v: dict, state: str, reason: str, details: dict, actor: Any
) -> Rollout:
    now = clock.now()
    before = rollout.verification_state
    v["history"] = _history(v, state, reason, now)
    v["reason"] = reason[:1000]
    v["escalation_run"] = None
    rollout.verification = v
    rollout.verification_state = state
    rollout.save(update_fields=["verification", "verification_state", "updated_at"])
    record_audit_event(
        actor=actor,
        action=CONCLUSIONS[state],
        target=rollout,
        environment=env_key(rollout),
        before={"verification_state": before},
        after={"verification_state": state},
        details={
            "level": v.get("level"),
            "rollback_run": v.get("rollback_run"),
            "since": v.get("since"),
            "until": v.get("until"),
            "max_level": rollout.max_level,
            "auto_escalate": rollout.auto_escalate,
            "reason": reason,
            **details,
        },
    )
    return rollout


def rollout_verification_conclude(
    *,
    rollout_id: int,
    expected_since: str | None,
    state: str,
    reason: str,
    actor: Any,
    details: dict | None = None,
) -> Rollout:
    """Close the open window: recovered, ended, exhausted, stopped or failed.

    ``expected_since`` is the window's start as read by the caller: a
    window already closed or reopened since is left unchanged (a
    duplicate). Writes ``rollout.verified`` (recovered) or
    ``rollout.verification_<state>`` with the reason and ``details`` (the
    checks' estimates, intervals, margins and evidence). Raise Conflict for
    a state that does not close a window.
    """
    if state not in CONCLUSIONS:
        raise Conflict(f"state: must be one of {', '.join(CONCLUSIONS)}", field="state")
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        v = dict(rollout.verification or {})
        if rollout.verification_state not in OPEN or v.get("since") != expected_since:
            return rollout
        return _conclude(rollout, v, state, reason, details or {}, actor)


def rollout_verification_escalate(
    *,
    rollout_id: int,
    expected_since: str | None,
    level: int,
    reason: str,
    actor: Any,
    details: dict | None = None,
) -> Rollout:
    """Escalate a rollout still worse after its rollback to ``level``.

    Through ``rollout_escalate`` (its preflight, its
    ``rollout.rollback_escalated`` event carrying ``reason`` and
    ``details``), then the window waits for the new run (``escalating``);
    the controller opens the next window once it succeeded. Automatic
    escalation stopped meanwhile: concluded ``stopped``. The escalation
    refused (max_level, no deployment, the rollback preflight): concluded
    ``exhausted`` with the refusal. A window already moved on
    (``expected_since``), or a newer rollback run (an operator escalated
    meanwhile): unchanged.
    """
    from canary.services.rollbacks import rollout_escalate, rollout_rollback_runs

    details = details or {}
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        v = dict(rollout.verification or {})
        if (
            rollout.verification_state != State.VERIFYING
            or v.get("since") != expected_since
        ):
            return rollout
        latest = rollout_rollback_runs(rollout).last()
        if latest is not None and latest.pk != v.get("rollback_run"):
            # An operator escalated meanwhile: the controller follows that run.
            return rollout
        if not rollout.auto_escalate:
            return _conclude(
                rollout,
                v,
                State.STOPPED,
                f"{reason} (not done: automatic escalation was stopped by an operator)",
                details,
                actor,
            )
        try:
            # A savepoint: a refused escalation leaves nothing behind.
            with audited_transaction():
                run = rollout_escalate(
                    rollout_id=rollout.pk,
                    level=level,
                    actor=actor,
                    reason=reason[:500],
                    details={
                        "decision": "escalate",
                        "verification": {
                            "from": State.VERIFYING,
                            "to": State.ESCALATING,
                            "level": v.get("level"),
                            "since": v.get("since"),
                            "until": v.get("until"),
                            "merchants": len(v.get("merchants") or []),
                        },
                        "explanation": reason,
                        **details,
                    },
                )
        except DomainError as exc:
            return _conclude(
                rollout,
                v,
                State.EXHAUSTED,
                f"{reason}; but level {level} was refused: {exc.message}",
                details,
                actor,
            )
        v["history"] = _history(v, State.ESCALATING, reason, clock.now())
        v.update(escalation_run=run.pk, reason=reason[:1000])
        rollout = lock_rollout(rollout.pk)
        rollout.verification = v
        rollout.verification_state = State.ESCALATING
        rollout.save(update_fields=["verification", "verification_state", "updated_at"])
    return rollout


def rollout_escalation_stop(*, rollout_id: int, actor: Any, reason: str) -> Rollout:
    """Stop automatic escalation of the rollout (for operators).

    From now on the controller never escalates it: a window that finds the
    merchants still worse is concluded ``stopped`` and says which level an
    operator could escalate to by hand (``rollout_escalate``). A run
    already started is not cancelled. Already stopped: unchanged, no event.
    Writes ``rollout.escalation_stopped``. Raise Conflict for a completed or
    aborted rollout (nothing to escalate).
    """
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if not rollout.auto_escalate:
            return rollout
        if rollout.status in (Status.COMPLETED, Status.ABORTED):
            raise Conflict(
                f"rollout {rollout.pk} is {rollout.status}: there is nothing to "
                "escalate",
                field="status",
            )
        rollout.auto_escalate = False
        rollout.save(update_fields=["auto_escalate", "updated_at"])
        v = rollout.verification or {}
        record_audit_event(
            actor=actor,
            action="rollout.escalation_stopped",
            target=rollout,
            environment=env_key(rollout),
            before={"auto_escalate": True},
            after={"auto_escalate": False},
            details={
                "status": rollout.status,
                "verification_state": rollout.verification_state,
                "level": v.get("level"),
                "escalation_run": v.get("escalation_run"),
                "reason": reason or "stopped by an operator",
            },
        )
    return rollout


def verification_latest_runs(rollout: Rollout) -> dict[int, CheckRun]:
    """Return, per verified check id, its latest check run of the open
    window (a run recorded with ``detail["verification"]["run"]``, the
    rollback run the window verifies; runs measured before the rollback,
    or in the window of a lower level, never count)."""
    v = rollout.verification or {}
    since = v.get("since")
    if not since or not v.get("rollback_run"):
        return {}
    latest: dict[int, CheckRun] = {}
    runs = CheckRun.objects.filter(
        rollout_id=rollout.pk,
        phase_index=v.get("phase", rollout.current_phase),
        measured_at__gte=dt.datetime.fromisoformat(since),
        detail__verification__run=v["rollback_run"],
    ).order_by("health_check_id", "-measured_at", "-id")
    for run in runs:
        latest.setdefault(run.health_check_id, run)
    return latest
