"""The canary controller: measure due checks, then move each rollout once.

One tick (``controller_tick``) does four things, never holding a row lock
across a provider call:

1. **Claim** (one short transaction): lock the rollouts in progress with
   ``select_for_update(skip_locked=True)``, pick their checks that are due
   (``next_due_at``), and push each one's ``next_due_at`` forward by its
   timeout plus a grace period. That lease is what stops a second
   controller from measuring the same check meanwhile; the locks are
   released at commit.
2. **Measure** with no transaction open: network providers (http,
   prometheus) run in a thread pool, each bounded by the check's timeout;
   database providers (sql, outcomes) run in this thread, bounded by their
   own statement timeout.
3. **Record** each measurement through ``check_run_record`` (one short
   transaction each), which moves the check's counters and audits a
   crossed limit.
4. **Decide**, one transaction per rollout: lock the row again (skipping it
   if another controller holds it), ask ``rollout_gate`` what the phase
   needs, and apply at most one transition through the services. Every
   automatic decision carries its explanation (which check, which measured
   value against which threshold, which limit) in the audit event details
   and, for a pause, in ``Rollout.pause_reason``.

Because each decision is recomputed under the row lock from the stored
state, and every service is keyed by what it expects (``expected_phase``,
the current status), two controllers ticking at once, or a redelivered
tick, never apply a transition twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connections, transaction
from django.db.models import Min, Q
from django.utils import timezone

from canary import clock, metrics
from canary.health import GateAction, GateDecision
from canary.models import (
    CheckRun,
    CheckStatus,
    HealthCheck,
    Rollout,
    RolloutStatus,
    Verdict,
)
from canary.providers import MeasureContext, Measurement, ProviderError, get_provider
from canary.services import (
    check_judge,
    check_run_record,
    rollout_advance,
    rollout_fail_phase,
    rollout_gate,
    rollout_pause,
    rollout_rollback_finished,
    rollout_transition,
)
from canary.transitions import ACTIVE
from controlplane.audit.actors import CONTROLLER
from controlplane.audit.services import audit_chain_lock
from controlplane.conf import setting
from controlplane.exceptions import DomainError
from flags.models import Environment

logger = logging.getLogger(__name__)

Status = RolloutStatus

# Providers that query Django databases: they run in the ticking thread (a
# thread of their own would need its own connection) and are bounded by
# their statement timeout.
IN_THREAD_PROVIDERS = frozenset({"sql", "outcomes"})
# Added to a check's timeout for its claim lease and for the pool's wait.
LEASE_GRACE_SECONDS = 5.0
POOL_WAIT_GRACE_SECONDS = 0.5
MAX_POOL_WORKERS = 8
# A rollback run still pending this long after creation is queued again.
ROLLBACK_REQUEUE_SECONDS = 3.0


@dataclass(frozen=True)
class MeasureJob:
    """A claimed measurement: everything needed to measure with no ORM row."""

    check_id: int
    check_name: str
    rollout_id: int
    phase_index: int
    provider: str
    spec: dict
    timeout: float
    context: MeasureContext


@dataclass
class MeasureResult:
    job: MeasureJob
    measurement: Measurement | None
    error: str | None
    measured_at: dt.datetime


@dataclass
class TickReport:
    """What one tick did (returned by the tasks, printed by the demo loop)."""

    rollouts: list[int] = field(default_factory=list)
    measured: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rollouts": self.rollouts,
            "measured": self.measured,
            "verdicts": self.verdicts,
            "decisions": self.decisions,
            "errors": self.errors,
        }


# The tick -------------------------------------------------------------------


def controller_tick(*, rollout_id: int | None = None) -> TickReport:
    """Run one controller tick over every rollout in progress (or one).

    Claim due checks, measure them with no transaction open, record the
    check runs, then apply at most one transition per rollout. Safe to run
    in several processes at once and to redeliver: see the module
    docstring. Errors of one rollout are logged and reported, never raised,
    so one broken rollout cannot stop the others.
    """
    started = time.perf_counter()
    report = TickReport()
    rollout_ids, jobs = _claim(rollout_id=rollout_id, now=clock.now())
    report.rollouts = rollout_ids
    for result in _measure(jobs):
        try:
            verdict = _record(result)
        except DomainError as exc:  # e.g. the check was deleted meanwhile
            report.errors.append(f"check {result.job.check_id}: {exc.message}")
            continue
        except Exception as exc:  # its lease expires: measured again later
            logger.exception(
                "controller: recording check %s failed", result.job.check_id
            )
            report.errors.append(
                f"check {result.job.check_id}: {type(exc).__name__}: {exc}"
            )
            continue
        report.measured += 1
        report.verdicts[verdict] = report.verdicts.get(verdict, 0) + 1
    for pk in rollout_ids:
        try:
            decision = _decide(pk)
        except DomainError as exc:
            # An operator moved the rollout between the gate and the
            # service: the next tick decides again from the new state.
            report.errors.append(f"rollout {pk}: {exc.message}")
            continue
        except Exception as exc:
            logger.exception("controller: deciding rollout %s failed", pk)
            report.errors.append(f"rollout {pk}: {type(exc).__name__}: {exc}")
            continue
        if decision is not None:
            report.decisions.append(decision)
    if rollout_id is None:
        _schedule_due_checks(rollout_ids)
    metrics.TICK_SECONDS.observe(time.perf_counter() - started)
    return report


def _schedule_due_checks(rollout_ids: list[int]) -> None:
    """Tick a rollout exactly when its next check falls due before the
    next beat, so a check's interval is kept instead of being rounded up to
    the tick. Only full (beat) ticks schedule these, one per rollout, so the
    scheduled ticks never multiply."""
    if not rollout_ids:
        return
    from canary.tasks import rollout_tick_soon

    now = clock.now()
    horizon = now + dt.timedelta(seconds=_tick_interval())
    soonest = (
        HealthCheck.objects.filter(
            rollout_id__in=rollout_ids,
            rollout__status__in=list(ACTIVE),
            next_due_at__gt=now,
            next_due_at__lt=horizon,
        )
        .order_by()
        .values("rollout_id")
        .annotate(due=Min("next_due_at"))
    )
    for row in soonest:
        rollout_tick_soon(
            row["rollout_id"], countdown=(row["due"] - now).total_seconds() + 0.02
        )


# 1. Claim -------------------------------------------------------------------


def _claim(
    *, rollout_id: int | None, now: dt.datetime
) -> tuple[list[int], list[MeasureJob]]:
    """Return the rollouts to decide on and the checks this tick measures."""
    with transaction.atomic():
        # NO KEY UPDATE: a CheckRun being inserted (a key share on its
        # rollout) does not make the rollout skip this tick.
        rollouts_qs = Rollout.objects.select_for_update(
            skip_locked=True, no_key=True
        ).filter(status__in=[*ACTIVE, Status.ROLLING_BACK])
        if rollout_id is not None:
            rollouts_qs = rollouts_qs.filter(pk=rollout_id)
        rollouts = {r.pk: r for r in rollouts_qs.order_by("pk")}
        active = [r for r in rollouts.values() if r.status in ACTIVE]
        if not active:
            return list(rollouts), []
        due = list(
            HealthCheck.objects.select_for_update(skip_locked=True)
            .filter(rollout_id__in=[r.pk for r in active])
            .filter(Q(next_due_at__isnull=True) | Q(next_due_at__lte=now))
            .order_by("rollout_id", "id")
        )
        flag_keys = dict(
            Rollout.objects.filter(pk__in=[r.pk for r in active]).values_list(
                "pk", "flag__key"
            )
        )
        env_keys = dict(
            Rollout.objects.filter(pk__in=[r.pk for r in active]).values_list(
                "pk", "environment__key"
            )
        )
        jobs: list[MeasureJob] = []
        for check in due:
            rollout = rollouts[check.rollout_id]
            lease = now + dt.timedelta(seconds=check.timeout + LEASE_GRACE_SECONDS)
            # A lease, not a schedule: check_run_record sets the real next
            # due time when the measurement is recorded.
            HealthCheck.objects.filter(pk=check.pk).update(next_due_at=lease)
            jobs.append(
                MeasureJob(
                    check_id=check.pk,
                    check_name=check.name,
                    rollout_id=rollout.pk,
                    phase_index=rollout.current_phase,
                    provider=check.provider,
                    spec=dict(check.spec or {}),
                    timeout=float(check.timeout),
                    context=MeasureContext(
                        flag_key=flag_keys[rollout.pk],
                        environment_key=env_keys[rollout.pk],
                        treatment_variation=rollout.treatment_variation,
                        since=rollout.phase_started_at or rollout.started_at or now,
                    ),
                )
            )
    return list(rollouts), jobs


# 2. Measure -----------------------------------------------------------------


def _measure_one(job: MeasureJob) -> Measurement:
    return get_provider(job.provider).measure(
        job.spec, job.context, timeout=job.timeout
    )


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return exc.message
    if isinstance(exc, DomainError):
        return f"invalid check: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _measure(jobs: list[MeasureJob]) -> list[MeasureResult]:
    """Measure every job; never raises (a failure is an ``error`` result)."""
    if not jobs:
        return []
    results: list[MeasureResult] = []
    pooled = [job for job in jobs if job.provider not in IN_THREAD_PROVIDERS]
    futures: list[tuple[MeasureJob, Future, float]] = []
    pool: ThreadPoolExecutor | None = None
    if pooled:
        pool = ThreadPoolExecutor(
            max_workers=min(MAX_POOL_WORKERS, len(pooled)),
            thread_name_prefix="canary-check",
        )
        for job in pooled:
            futures.append(
                (job, pool.submit(_measure_one, job), time.monotonic() + job.timeout)
            )
    try:
        # Database providers run here while the network ones are in flight.
        for job in jobs:
            if job.provider not in IN_THREAD_PROVIDERS:
                continue
            try:
                results.append(MeasureResult(job, _measure_one(job), None, clock.now()))
            except Exception as exc:
                results.append(MeasureResult(job, None, _error_text(exc), clock.now()))
        for job, future, deadline in futures:
            wait = max(0.0, deadline - time.monotonic()) + POOL_WAIT_GRACE_SECONDS
            try:
                measurement = future.result(timeout=wait)
                results.append(MeasureResult(job, measurement, None, clock.now()))
            except FutureTimeout:
                results.append(
                    MeasureResult(
                        job,
                        None,
                        f"timed out after {job.timeout:g}s (controller bound)",
                        clock.now(),
                    )
                )
            except Exception as exc:
                results.append(MeasureResult(job, None, _error_text(exc), clock.now()))
    finally:
        if pool is not None:
            # A provider stuck past its timeout is abandoned, not waited for.
            pool.shutdown(wait=False, cancel_futures=True)
    return results


# 3. Record ------------------------------------------------------------------


def _record(result: MeasureResult) -> str:
    """Judge one measurement and keep it as a CheckRun; return its verdict."""
    job = result.job
    check = (
        HealthCheck.objects.select_related("rollout").filter(pk=job.check_id).first()
    )
    if check is None:
        raise DomainError(f"health check {job.check_id} no longer exists")
    measurement = result.measurement
    if result.error is not None or measurement is None:
        judgement, detail = check_judge(
            check, value=None, error=result.error or "no result"
        )
        value = None
    else:
        judgement, detail = check_judge(
            check,
            value=measurement.value,
            samples=measurement.samples,
            cohorts=measurement.cohorts,
        )
        value = measurement.value
    detail["provider"] = job.provider
    detail["timeout"] = job.timeout
    if measurement is not None and measurement.detail:
        detail["measurement_detail"] = measurement.detail
    check_run_record(
        check_id=job.check_id,
        phase_index=job.phase_index,
        value=value,
        verdict=judgement.verdict,
        detail=detail,
        measured_at=result.measured_at,
        actor=CONTROLLER,
    )
    metrics.check_verdict_counted(job.provider, judgement.verdict)
    return judgement.verdict


# 4. Decide ------------------------------------------------------------------


def _limit_text(check: HealthCheck) -> str:
    if check.status == CheckStatus.FAILED:
        return (
            f"{check.consecutive_failures} consecutive failure(s) exceed failure_limit "
            f"{check.failure_limit}"
        )
    if check.status == CheckStatus.INCONCLUSIVE:
        return (
            f"{check.inconclusive_count} inconclusive result(s) exceed inconclusive_limit "
            f"{check.inconclusive_limit}"
        )
    if check.status == CheckStatus.ERRORED:
        return (
            f"{check.consecutive_errors} consecutive error(s) exceed consecutive_error_limit "
            f"{check.consecutive_error_limit}"
        )
    return f"{check.pass_count} of {check.min_samples} passing samples"


def _first_breach(runs: list[CheckRun]) -> CheckRun | None:
    """Return the first failing run of the current streak (runs newest first)."""
    first = None
    for run in runs:
        if run.verdict == Verdict.PASS:
            break
        if run.verdict == Verdict.FAIL:
            first = run
    return first


def _explain_checks(rollout: Rollout, names: tuple[str, ...] | list[str]) -> list[dict]:
    """Return, per named check, what was measured against what and which
    limit was crossed: the explanation kept with an automatic decision."""
    explained: list[dict] = []
    for check in rollout.checks.filter(name__in=list(names)).order_by("id"):
        runs = list(
            check.runs.filter(phase_index=rollout.current_phase).order_by(
                "-measured_at", "-id"
            )[:100]
        )
        last = runs[0] if runs else None
        breach = _first_breach(runs)
        explained.append(
            {
                "check": check.name,
                "provider": check.provider,
                "status": check.status,
                "value": check.last_value,
                "verdict": check.last_verdict,
                "comparator": check.comparator,
                "threshold": check.threshold,
                "mode": check.mode,
                "measurement": (last.detail or {}).get("message", "") if last else "",
                "error": (last.detail or {}).get("error") if last else None,
                "limit": _limit_text(check),
                "on_failure": check.on_failure,
                "check_run": last.pk if last else None,
                "first_breach_at": breach.measured_at.isoformat() if breach else None,
            }
        )
    return explained


def _sentence(item: dict) -> str:
    measured = (
        item["error"] and f"provider error: {item['error']}" or item["measurement"]
    )
    return f"check {item['check']} {item['status']}: {measured} ({item['limit']})"


def _explain(decision: GateDecision, explained: list[dict]) -> str:
    if explained:
        return "; ".join(_sentence(item) for item in explained)
    return "; ".join(decision.reasons)


def _tick_interval() -> float:
    return float(setting("CANARY_TICK_SECONDS"))


def _after_commit_tick(rollout_id: int, countdown: float | None = None) -> None:
    from canary.tasks import rollout_tick_soon

    transaction.on_commit(lambda: rollout_tick_soon(rollout_id, countdown=countdown))


def _is_wanted(rollout: Rollout, decision: GateDecision) -> bool:
    """Return whether ``decision`` calls for a transition of ``rollout``."""
    if decision.action == GateAction.FAIL:
        return not (decision.on_failure == "pause" and rollout.status == Status.PAUSED)
    if decision.action == GateAction.PAUSE:
        return rollout.status != Status.PAUSED
    return rollout.status == Status.RUNNING and decision.action in (
        GateAction.AWAIT_APPROVAL,
        GateAction.ADVANCE,
    )


def _lock_for_decision(rollout_id: int, environment_id: int) -> Rollout | None:
    """Lock what a decision writes, or return None to decide next tick.

    The audit chain lock comes first. Every audited write takes it, but
    after rows of its own, in differing orders (a flag state change locks
    its environment first and a flag creation last), so a controller that
    waited for a row while holding the chain could deadlock with one of
    them. Holding the chain, it waits for nothing it can skip: the
    environment (whose ruleset version the decision bumps), the rollout's
    checks (a measurement being recorded) and the rollout itself are taken
    with SKIP LOCKED, and any of them busy defers the decision.
    """
    audit_chain_lock()
    if not list(
        Environment.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk=environment_id)
        .values_list("pk", flat=True)
    ):
        return None
    ids = list(
        HealthCheck.objects.filter(rollout_id=rollout_id).values_list("pk", flat=True)
    )
    locked = list(
        HealthCheck.objects.select_for_update(skip_locked=True)
        .filter(pk__in=ids)
        .values_list("pk", flat=True)
    )
    if len(locked) != len(ids):
        return None
    return (
        Rollout.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk=rollout_id)
        .first()
    )


def _decide(rollout_id: int) -> dict | None:
    """Apply at most one transition to the rollout, in one transaction.

    The gate is first read without locks; only a decision that calls for a
    transition locks (see ``_lock_for_decision``) and decides again from
    the locked rows. Return what was done (``{"rollout", "action",
    "reason"}``) or None.
    """
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None:
        return None
    if rollout.status in ACTIVE:
        decision = rollout_gate(rollout=rollout, now=clock.now())
        if not _is_wanted(rollout, decision):
            # Hold. When only min_duration is left and it ends before the
            # next beat, tick exactly then.
            if (
                decision.action == GateAction.HOLD
                and 0 < decision.remaining <= _tick_interval()
            ):
                _after_commit_tick(rollout.pk, countdown=decision.remaining + 0.05)
            return None
    elif rollout.status != Status.ROLLING_BACK or not _rollback_ended(rollout):
        if rollout.status == Status.ROLLING_BACK:
            _rollback_nudge(rollout)
        return None
    with transaction.atomic():
        rollout = _lock_for_decision(rollout.pk, rollout.environment_id)
        if rollout is None:
            return None  # busy: another controller, an operator, a measurement
        if rollout.status == Status.ROLLING_BACK:
            return _rollback_progress(rollout)
        if rollout.status not in ACTIVE:
            return None
        decision = rollout_gate(rollout=rollout, now=clock.now())
        if not _is_wanted(rollout, decision):
            return None
        if decision.action == GateAction.FAIL:
            return _fail(rollout, decision)
        if decision.action == GateAction.PAUSE:
            explained = _explain_checks(rollout, decision.checks)
            reason = "automatic pause: " + (
                "; ".join(decision.reasons[:1]) + "; " + _explain(decision, explained)
                if decision.reasons and decision.reasons[0].startswith("max_duration")
                else _explain(decision, explained)
            )
            rollout_pause(
                rollout_id=rollout.pk,
                actor=CONTROLLER,
                reason=reason,
                details={
                    "decision": "pause",
                    "gate": list(decision.reasons),
                    "checks": explained,
                },
            )
            return {"rollout": rollout.pk, "action": "pause", "reason": reason}
        if rollout.status != Status.RUNNING:
            return None  # awaiting approval or paused: only a failure acts
        if decision.action == GateAction.AWAIT_APPROVAL:
            reason = "; ".join(decision.reasons) + ": every other gate is open"
            rollout_transition(
                rollout_id=rollout.pk,
                to=Status.AWAITING_APPROVAL,
                actor=CONTROLLER,
                reason=reason,
                details={
                    "decision": "await_approval",
                    "checks": _passing_summary(rollout),
                },
            )
            return {"rollout": rollout.pk, "action": "await_approval", "reason": reason}
        if decision.action == GateAction.ADVANCE:
            phase_index = rollout.current_phase
            reason = "; ".join(decision.reasons)
            after = rollout_advance(
                rollout_id=rollout.pk,
                expected_phase=phase_index,
                actor=CONTROLLER,
                reason=reason,
                details={"decision": "advance", "checks": _passing_summary(rollout)},
            )
            if after.status != Status.COMPLETED:
                # The next phase's checks are due now: measure them without
                # waiting for the beat.
                _after_commit_tick(rollout.pk)
            return {
                "rollout": rollout.pk,
                "action": "advance",
                "from_phase": phase_index,
                "status": after.status,
                "reason": reason,
            }
        return None


def _passing_summary(rollout: Rollout) -> list[dict]:
    return [
        {
            "check": name,
            "passes": passes,
            "min_samples": needed,
            "value": value,
            "comparator": comparator,
            "threshold": threshold,
        }
        for name, passes, needed, value, comparator, threshold in rollout.checks.order_by(
            "id"
        ).values_list(
            "name", "pass_count", "min_samples", "last_value", "comparator", "threshold"
        )
    ]


def _fail(rollout: Rollout, decision: GateDecision) -> dict | None:
    """Act on a failed check: its on_failure (pause, or rollback 1/2/3)."""
    on_failure = decision.on_failure or "rollback_1"
    if on_failure == "pause" and rollout.status == Status.PAUSED:
        return None  # already paused: pausing again would say nothing new
    explained = _explain_checks(rollout, decision.checks)
    reason = "automatic " + (
        "pause"
        if on_failure == "pause"
        else f"rollback level {on_failure.rsplit('_', 1)[1]}"
    )
    reason = f"{reason}: {_explain(decision, explained)}"
    details = {
        "decision": "fail",
        "on_failure": on_failure,
        "while": rollout.status,
        "gate": list(decision.reasons),
        "checks": explained,
    }
    rollout_fail_phase(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        reason=reason,
        on_failure=on_failure,
        details=details,
    )
    if on_failure != "pause":
        breaches = [
            dt.datetime.fromisoformat(item["first_breach_at"])
            for item in explained
            if item.get("first_breach_at")
        ]
        seconds = (clock.now() - min(breaches)).total_seconds() if breaches else None
        worst = next((i for i in explained if i["on_failure"] == on_failure), None)
        cause = worst["provider"] if worst else "unknown"
        transaction.on_commit(
            lambda: metrics.automatic_rollback_counted(cause, seconds)
        )
        # Finish the rollout as soon as the rollback run is done.
        _after_commit_tick(rollout.pk)
    return {"rollout": rollout.pk, "action": f"fail:{on_failure}", "reason": reason}


def _rollout_run(rollout: Rollout) -> Any:
    from rollback.models import RollbackRun, Trigger

    return (
        RollbackRun.objects.filter(trigger=Trigger.ROLLOUT, trigger_ref=str(rollout.pk))
        .order_by("-id")
        .first()
    )


def _rollback_ended(rollout: Rollout) -> bool:
    from rollback.models import RunStatus

    run = _rollout_run(rollout)
    return run is not None and run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)


def _rollback_nudge(rollout: Rollout) -> None:
    """Queue the rollout's rollback run again if it has not started within
    ``ROLLBACK_REQUEUE_SECONDS``: a lost task message must not leave the
    flag unrestored until the reaper's next pass. A duplicate delivery is a
    no-op (steps are claimed)."""
    from rollback.models import RunStatus
    from rollback.services import rollback_run_queue

    run = _rollout_run(rollout)
    if run is None or run.status != RunStatus.PENDING:
        return
    # Wall time, not canary.clock: created_at is the database's auto_now_add.
    if (timezone.now() - run.created_at).total_seconds() < ROLLBACK_REQUEUE_SECONDS:
        return
    try:
        rollback_run_queue(run_id=run.pk)
        logger.warning(
            "rollout %s: rollback run %s had not started; queued again",
            rollout.pk,
            run.pk,
        )
    except Exception as exc:  # the beat's reaper remains
        logger.warning(
            "rollout %s: rollback run %s not queued again: %s", rollout.pk, run.pk, exc
        )


def _rollback_progress(rollout: Rollout) -> dict | None:
    """Mark a rolling-back rollout rolled back once its rollback run ended."""
    from controlplane.audit.models import AuditEvent
    from rollback.models import RunStatus

    run = _rollout_run(rollout)
    if run is None or run.status in (RunStatus.PENDING, RunStatus.RUNNING):
        return None
    details = {"rollback_run": run.pk, "level": run.level, "run_status": run.status}
    if run.status == RunStatus.SUCCEEDED:
        reason = f"rollback run {run.pk} (level {run.level}) succeeded"
        rollout_rollback_finished(
            rollout_id=rollout.pk,
            actor=CONTROLLER,
            succeeded=True,
            reason=reason,
            details=details,
        )
        return {"rollout": rollout.pk, "action": "rolled_back", "reason": reason}
    already = AuditEvent.objects.filter(
        action="rollout.rollback_failed",
        target_id=str(rollout.pk),
        details__rollback_run=run.pk,
    ).exists()
    if already:
        return None
    reason = f"rollback run {run.pk} (level {run.level}) failed: {run.error}"
    rollout_rollback_finished(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        succeeded=False,
        reason=reason,
        details=details,
    )
    return {"rollout": rollout.pk, "action": "rollback_failed", "reason": reason}


# The dev loop ---------------------------------------------------------------

_loop_wake = threading.Event()
_loop_lock = threading.Lock()
_loop_count = 0
_loop_due: list[float] = []  # monotonic times of requested ticks


def loop_is_running() -> bool:
    """Return whether a ``run_loop`` ticks in this process."""
    return _loop_count > 0


def loop_wake(countdown: float | None = None) -> None:
    """Ask the in-process loop to tick now (or in ``countdown`` seconds)."""
    if countdown:
        with _loop_lock:
            _loop_due.append(time.monotonic() + countdown)
    else:
        _loop_wake.set()


def run_loop(stop_event: threading.Event, interval: float | None = None) -> None:
    """Tick every ``interval`` seconds (CANARY_TICK_SECONDS) until stopped.

    The zero-setup path without a broker: ``manage.py demo --serve`` runs
    this in a daemon thread instead of Celery beat and a worker. A gate
    that opens (``loop_wake``) ticks at once. Never raises.
    """
    global _loop_count
    with _loop_lock:
        _loop_count += 1
    try:
        while not stop_event.is_set():
            _loop_wake.clear()
            try:
                report = controller_tick()
                for decision in report.decisions:
                    logger.info("controller: %s", decision)
            except Exception:
                logger.exception("controller tick failed")
            finally:
                close_old_connections()
            period = interval if interval is not None else _tick_interval()
            next_at = time.monotonic() + period
            while not stop_event.is_set() and not _loop_wake.is_set():
                now = time.monotonic()
                with _loop_lock:
                    due = [t for t in _loop_due if t <= now]
                    if due:
                        _loop_due[:] = [t for t in _loop_due if t > now]
                        break
                    soonest = min([next_at, *_loop_due])
                if now >= next_at:
                    break
                _loop_wake.wait(min(0.25, max(0.0, soonest - now)))
    finally:
        with _loop_lock:
            _loop_count -= 1
        # This thread's connections would otherwise outlive it.
        connections.close_all()


_loops: list[tuple[threading.Thread, threading.Event]] = []


def start_loop_thread(
    interval: float | None = None,
) -> tuple[threading.Thread, threading.Event]:
    """Start ``run_loop`` in a daemon thread; return it and its stop event."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_loop, args=(stop, interval), name="canary-controller", daemon=True
    )
    thread.start()
    with _loop_lock:
        _loops.append((thread, stop))
    return thread, stop


def stop_loop_threads(timeout: float = 10.0) -> None:
    """Stop every loop this process started and wait for them to end."""
    with _loop_lock:
        loops, _loops[:] = list(_loops), []
    for _, stop in loops:
        stop.set()
    _loop_wake.set()
    for thread, _ in loops:
        thread.join(timeout=timeout)
