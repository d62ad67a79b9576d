"""After a rollback: measure the verification window, then decide.

A rolled-back rollout whose window is open (``verification_state``
verifying or escalating, canary.services.verification) is claimed with
the rollouts in progress. ``verification_jobs`` (inside the claim's
transaction) leases its due compare checks like any other check; their
measurement context names the merchants treated at the rollback
(``treated_merchants``: cohorts by merchant key, not by variation) and
starts at the window, so the comparison is of those merchants after the
rollback against their own pre-rollout baselines, drift-corrected by the
never-treated ones. ``record`` keeps each run with the failed phase's
index and ``detail["verification"]``, the window's marker.

``verification_decide`` reads the window's latest answers without locks
(``canary.verification`` decides, pure); only an action locks (the
decision step's locks, SKIP LOCKED) and decides again from the locked
rows before calling one service, keyed by the window's start, so two
controllers never act twice. A rollback run newer than the window (an
automatic or an operator's escalation) is followed first: verified again
once it succeeded, the window failed if it failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.db import transaction
from django.db.models import Q

from canary import clock, verification
from canary.controller.claim import LEASE_GRACE_SECONDS, MeasureJob
from canary.controller.rollbacks import rollback_nudge
from canary.health import answer_of
from canary.models import CheckMode, HealthCheck, Rollout, VerificationState
from canary.providers import MeasureContext
from canary.services.verification import (
    OPEN,
    rollout_verification_conclude,
    rollout_verification_escalate,
    verification_checks,
    verification_latest_runs,
    verification_open,
)
from controlplane.audit.actors import CONTROLLER

State = VerificationState


def verification_filter() -> Q:
    """Return the rolled-back rollouts the claim takes: an open window."""
    return Q(status="rolled_back", verification_state__in=list(OPEN))


def _context(rollout: Rollout, flag_key: str, env_key: str) -> MeasureContext:
    v = rollout.verification or {}
    return MeasureContext(
        flag_key=flag_key,
        environment_key=env_key,
        treatment_variation=rollout.treatment_variation,
        since=dt.datetime.fromisoformat(v["since"]),
        compare=True,
        # Cohorts by merchant key: the merchants treated at the rollback,
        # whatever variation they are served now; every other merchant
        # (never treated) is the control.
        treated_merchants=tuple(v.get("merchants") or ()),
        baseline=rollout.merchant_baseline or None,
    )


def verification_jobs(rollouts: list[Rollout], now: dt.datetime) -> list[MeasureJob]:
    """Lease the due compare checks of the open windows; return their jobs.

    Call inside the claim's transaction, the rollouts locked.
    """
    verifying = {
        r.pk: r
        for r in rollouts
        if r.verification_state == State.VERIFYING
        and (r.verification or {}).get("since")
    }
    if not verifying:
        return []
    due = list(
        HealthCheck.objects.select_for_update(skip_locked=True)
        .filter(rollout_id__in=list(verifying), mode=CheckMode.COMPARE, dry_run=False)
        .filter(Q(next_due_at__isnull=True) | Q(next_due_at__lte=now))
        .order_by("rollout_id", "id")
    )
    keys = {
        pk: (flag, env)
        for pk, flag, env in Rollout.objects.filter(pk__in=list(verifying)).values_list(
            "pk", "flag__key", "environment__key"
        )
    }
    jobs: list[MeasureJob] = []
    for check in due:
        rollout = verifying[check.rollout_id]
        v = rollout.verification
        lease = now + dt.timedelta(seconds=check.timeout + LEASE_GRACE_SECONDS)
        HealthCheck.objects.filter(pk=check.pk).update(next_due_at=lease)
        jobs.append(
            MeasureJob(
                check_id=check.pk,
                check_name=check.name,
                rollout_id=rollout.pk,
                phase_index=int(v.get("phase", rollout.current_phase)),
                provider=check.provider,
                spec=dict(check.spec or {}),
                timeout=float(check.timeout),
                context=_context(rollout, *keys[rollout.pk]),
                detail={
                    "verification": {
                        "since": v["since"],
                        "level": v.get("level"),
                        "run": v.get("rollback_run"),
                    }
                },
            )
        )
    return jobs


def _answers(rollout: Rollout) -> list[verification.CheckAnswer]:
    names = {c.pk: c.name for c in verification_checks(rollout)}
    answers = []
    for check_id, run in verification_latest_runs(rollout).items():
        if check_id not in names:
            continue
        detail = run.detail or {}
        answers.append(
            verification.CheckAnswer(
                name=names[check_id],
                answer=detail.get("answer") or answer_of(run.verdict),
                comparison=detail.get("comparison"),
                note=str(detail.get("note") or detail.get("message") or ""),
                check_run=run.pk,
                measured_at=run.measured_at.isoformat(),
            )
        )
    return answers


def window_decision(rollout: Rollout, now: dt.datetime) -> verification.VerifyDecision:
    """Return what the open window of ``rollout`` calls for now (no writes)."""
    v = rollout.verification or {}
    rules = verification.WindowRules(
        level=int(v.get("level") or 1),
        max_level=rollout.max_level,
        has_deployment=rollout.deployment_id is not None,
        auto_escalate=rollout.auto_escalate,
        until=dt.datetime.fromisoformat(v["until"]),
        checks=tuple(c.name for c in verification_checks(rollout)),
    )
    return verification.verification_decide(rules, _answers(rollout), now)


def _latest_run(rollout: Rollout):  # noqa: ANN202 (a RollbackRun or None)
    from rollback.models import RollbackRun, Trigger

    return (
        RollbackRun.objects.filter(trigger=Trigger.ROLLOUT, trigger_ref=str(rollout.pk))
        .order_by("-id")
        .first()
    )


Lock = Callable[[int, int], "Rollout | None"]


def _follow(rollout: Rollout, run, lock: Lock) -> dict | None:  # noqa: ANN001
    """A rollback run newer than the window: verify it once it succeeded."""
    from rollback.models import RunStatus

    if run.status in (RunStatus.PENDING, RunStatus.RUNNING):
        rollback_nudge(rollout)
        return None
    since = (rollout.verification or {}).get("since")
    with transaction.atomic():
        locked = lock(rollout.pk, rollout.environment_id)
        if locked is None or locked.verification_state not in OPEN:
            return None
        if (locked.verification or {}).get("since") != since:
            return None
        if run.status == RunStatus.SUCCEEDED:
            after = verification_open(
                rollout_id=locked.pk, run_id=run.pk, actor=CONTROLLER
            )
            return {
                "rollout": rollout.pk,
                "action": f"verify:{after.verification_state or 'none'}",
                "reason": (after.verification or {}).get("reason", ""),
            }
        reason = (
            f"the escalation's rollback run {run.pk} ({verification.level_text(run.level)}) "
            f"failed: {run.error or 'no error recorded'}; an operator must act "
            f"(manage.py rollback status {run.pk})"
        )
        rollout_verification_conclude(
            rollout_id=locked.pk,
            expected_since=since,
            state=State.FAILED,
            reason=reason,
            actor=CONTROLLER,
            details={"escalation_run": run.pk, "run_level": run.level},
        )
        return {"rollout": rollout.pk, "action": "verify:failed", "reason": reason}


def verification_decide(rollout: Rollout, lock: Lock) -> dict | None:
    """Act on the open window of a rolled-back ``rollout`` at most once.

    ``lock`` is the decision step's lock (returns the locked rollout, or
    None when something is busy: decide next tick). Return what was done
    or None.
    """
    if rollout.verification_state not in OPEN:
        return None
    v = rollout.verification or {}
    run = _latest_run(rollout)
    if run is not None and run.pk != v.get("rollback_run"):
        return _follow(rollout, run, lock)
    if rollout.verification_state != State.VERIFYING:
        return None
    now = clock.now()
    if window_decision(rollout, now).action == verification.WAIT:
        return None
    with transaction.atomic():
        locked = lock(rollout.pk, rollout.environment_id)
        if locked is None or locked.verification_state != State.VERIFYING:
            return None
        since = (locked.verification or {}).get("since")
        if since != v.get("since"):
            return None
        decision = window_decision(locked, now)
        details = {"decision": decision.action, "checks": list(decision.checks)}
        if decision.action == verification.WAIT:
            return None
        if decision.action == verification.ESCALATE:
            after = rollout_verification_escalate(
                rollout_id=locked.pk,
                expected_since=since,
                level=decision.level,
                reason=decision.reason,
                actor=CONTROLLER,
                details=details,
            )
            if after.verification_state == State.ESCALATING:
                from canary.tasks import rollout_tick_soon

                # Follow the run as soon as it has executed.
                transaction.on_commit(lambda: rollout_tick_soon(locked.pk))
            return {
                "rollout": rollout.pk,
                "action": f"verify:{after.verification_state}",
                "level": decision.level,
                "reason": (after.verification or {}).get("reason", decision.reason),
            }
        state = {
            verification.RECOVERED: State.RECOVERED,
            verification.ENDED: State.ENDED,
            verification.EXHAUSTED: State.EXHAUSTED,
            verification.STOPPED: State.STOPPED,
        }[decision.action]
        rollout_verification_conclude(
            rollout_id=locked.pk,
            expected_since=since,
            state=state,
            reason=decision.reason,
            actor=CONTROLLER,
            details=details,
        )
        return {
            "rollout": rollout.pk,
            "action": f"verify:{state}",
            "reason": decision.reason,
        }
