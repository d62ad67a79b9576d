"""The rollout report: what happened, what was measured, and what to do now.

``report_build(rollout)`` reads a rollout, its phases, checks, check runs,
audit events, outcome events and rollback runs, and returns plain data
(JSON-ready): per phase its timing and, from ``canary.report_evidence``,
the controller's own evidence -- per check the answer (worse / not worse /
not yet), the estimate, its interval, the margin or threshold, the
treated and control merchants and events -- and the decision the gate
took (advance, wait, pause, rollback); every check's measurements; the raw
treatment and control totals of the outcome events as context; the
rollback actions taken; the decisions with their explanations; and a
verdict derived from the same answers the controller used:

* ``roll back``: a check (not dry-run) said *worse* in a phase (its last
  answer there), or the rollout was rolled back;
* ``fix and re-test``: no *worse*, but the evidence is missing or spoiled:
  a prove phase was left with a check that did not say *not worse*
  (impossible by construction; reported if seen), a check is inconclusive
  or erroring, the rollout was aborted, is paused or never started;
* ``proceed``: no *worse* anywhere, and in every prove phase left, every
  check's last answer was *not worse* (completed, or in progress so far).

Dry-run checks are shown, marked, and never decide. The cohort totals are
context only: no test is run on them and they never decide.
``report_markdown`` and ``report_json`` (``canary.report_text``) render
it. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, Q

from canary import analysis, clock
from canary.models import CheckMode, CheckRun, Rollout, RolloutStatus, Verdict
from canary.report_evidence import answer_of_run, compare_metric, phases_evidence
from canary.report_verdict import (  # noqa: F401 (re-exported)
    _SYMBOLS,
    FIX_AND_RETEST,
    PROCEED,
    ROLL_BACK,
    _fmt,
    evidence_text,
    metric_text,
    verdict_derive,
)
from controlplane.audit.models import AuditEvent

COHORT_NOTE = (
    "raw request totals of the outcome events per variation, for context: no "
    "test is run on them and they decide nothing (the checks' merchant-level "
    "comparisons are the evidence)"
)
# Markdown lists at most this many runs per check; JSON has them all.
MD_RUNS_PER_CHECK = 60


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _target(phase: Any) -> str:
    if phase.target_type == "percentage":
        return f"{phase.percentage:g}% of merchants"
    label = "pilot" if phase.target_type == "pilot" else "internal"
    return f"{label}: {', '.join(phase.pilot_merchants)}"


def _rollout_events(rollout: Rollout, check_ids: list[int]) -> list[AuditEvent]:
    query = Q(target_type="canary.rollout", target_id=str(rollout.pk))
    if check_ids:
        query |= Q(
            target_type="canary.healthcheck", target_id__in=[str(i) for i in check_ids]
        )
    return list(AuditEvent.objects.filter(query).order_by("id"))


def _phase_starts(rollout: Rollout, events: list[AuditEvent]) -> dict[int, dt.datetime]:
    starts: dict[int, dt.datetime] = {}
    if rollout.started_at is not None:
        starts[0] = rollout.started_at
    for event in events:
        if event.action == "rollout.phase_advanced" and isinstance(event.after, dict):
            starts[int(event.after.get("phase", 0))] = event.created_at
    return starts


def _phases(rollout: Rollout, events: list[AuditEvent], now: dt.datetime) -> list[dict]:
    phases = list(rollout.phases.order_by("index"))
    starts = _phase_starts(rollout, events)
    result = []
    for phase in phases:
        start = starts.get(phase.index)
        end = starts.get(phase.index + 1)
        if start is not None and end is None and phase.index == rollout.current_phase:
            end = rollout.finished_at
        if start is None:
            outcome = "not reached"
        elif phase.index < rollout.current_phase:
            outcome = "passed"
        elif rollout.status == RolloutStatus.COMPLETED:
            outcome = "passed"
        elif rollout.status in (RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK):
            outcome = "rolled back"
        elif rollout.status == RolloutStatus.ABORTED:
            outcome = "aborted"
        else:
            outcome = f"current ({rollout.status})"
        result.append(
            {
                "index": phase.index,
                "name": phase.name,
                "target": _target(phase),
                "target_type": phase.target_type,
                "percentage": phase.percentage,
                "pilot_merchants": phase.pilot_merchants,
                "min_duration": phase.min_duration,
                "max_duration": phase.max_duration,
                "requires_approval": phase.requires_approval,
                "started_at": _iso(start),
                "ended_at": _iso(end),
                "duration_seconds": _seconds(start, end or (now if start else None)),
                "outcome": outcome,
            }
        )
    return result


def _run_interval(run: CheckRun) -> dict:
    comparison = (run.detail or {}).get("comparison")
    if not isinstance(comparison, dict):
        return {"estimate": None, "lower": None, "upper": None, "metric": None}
    return {
        key: comparison.get(key) for key in ("estimate", "lower", "upper", "metric")
    }


def _checks(rollout: Rollout) -> list[dict]:
    runs_by_check: dict[int, list[CheckRun]] = {}
    for run in CheckRun.objects.filter(rollout=rollout).order_by("measured_at", "id"):
        runs_by_check.setdefault(run.health_check_id, []).append(run)
    result = []
    for check in rollout.checks.order_by("id"):
        runs = runs_by_check.get(check.pk, [])
        verdicts = {verdict: 0 for verdict in Verdict.values}
        per_phase: dict[int, dict] = {}
        for run in runs:
            verdicts[run.verdict] += 1
            phase = per_phase.setdefault(
                run.phase_index,
                {
                    "phase": run.phase_index,
                    "verdicts": {v: 0 for v in Verdict.values},
                    "values": [],
                },
            )
            phase["verdicts"][run.verdict] += 1
            phase["values"].append(run.value)
        result.append(
            {
                "id": check.pk,
                "name": check.name,
                "provider": check.provider,
                "spec": check.spec,
                "mode": check.mode,
                "comparator": check.comparator,
                "threshold": check.threshold,
                "relative_tolerance": check.relative_tolerance,
                "margin": check.margin,
                "metric": compare_metric(check)
                if check.mode == CheckMode.COMPARE
                else None,
                "alpha": check.alpha,
                "dry_run": check.dry_run,
                "baseline": (rollout.baseline or {}).get(check.name),
                "min_samples": check.min_samples,
                "failure_limit": check.failure_limit,
                "inconclusive_limit": check.inconclusive_limit,
                "consecutive_error_limit": check.consecutive_error_limit,
                "on_failure": check.on_failure,
                "status": check.status,
                "verdicts": verdicts,
                "summary": analysis.summary([run.value for run in runs]),
                "phases": [
                    {
                        "phase": p["phase"],
                        "verdicts": p["verdicts"],
                        "summary": analysis.summary(p["values"]),
                    }
                    for p in sorted(per_phase.values(), key=lambda p: p["phase"])
                ],
                "runs": [
                    {
                        "id": run.pk,
                        "phase": run.phase_index,
                        "measured_at": _iso(run.measured_at),
                        "value": run.value,
                        "verdict": run.verdict,
                        "answer": answer_of_run(run),
                        **_run_interval(run),
                        "limit": (run.detail or {}).get("limit"),
                        "message": (run.detail or {}).get("message", ""),
                    }
                    for run in runs
                ],
            }
        )
    return result


def _cohort_totals(
    rollout: Rollout, since: dt.datetime, until: dt.datetime
) -> dict | None:
    """Return the raw treatment and control totals of the outcome events in
    [since, until), or None without events. Context only: no test is run
    on them (the checks' comparisons are the evidence)."""
    from canary.models import OutcomeEvent

    rows = (
        OutcomeEvent.objects.filter(
            environment_id=rollout.environment_id,
            flag_key=rollout.flag.key,
            occurred_at__gte=since,
            occurred_at__lt=until,
            variation__in=[rollout.treatment_variation, rollout.control_variation],
        )
        .values("variation")
        .annotate(
            n=Count("id"),
            failures=Count("id", filter=Q(outcome="failure")),
            merchants=Count("merchant_key", distinct=True),
        )
    )
    totals = {row["variation"]: row for row in rows}
    if not totals:
        return None

    def side(variation: str) -> dict:
        row = totals.get(variation) or {"n": 0, "failures": 0, "merchants": 0}
        n = row["n"]
        return {
            "n": n,
            "failures": row["failures"],
            "error_rate": row["failures"] / n if n else None,
            "merchants": row["merchants"],
        }

    return {
        "since": _iso(since),
        "until": _iso(until),
        "treatment": side(rollout.treatment_variation),
        "control": side(rollout.control_variation),
    }


def _cohorts(rollout: Rollout, phases: list[dict], now: dt.datetime) -> dict:
    if rollout.started_at is None:
        return {"overall": None, "phases": [], "note": COHORT_NOTE}
    end = rollout.finished_at or now
    per_phase = []
    for phase in phases:
        if phase["started_at"] is None:
            continue
        since = dt.datetime.fromisoformat(phase["started_at"])
        until = (
            dt.datetime.fromisoformat(phase["ended_at"]) if phase["ended_at"] else end
        )
        per_phase.append(
            {
                "phase": phase["index"],
                "name": phase["name"],
                "comparison": _cohort_totals(rollout, since, until),
            }
        )
    return {
        "overall": _cohort_totals(rollout, rollout.started_at, end),
        "phases": per_phase,
        "note": COHORT_NOTE,
    }


def _rollbacks(rollout: Rollout) -> list[dict]:
    from rollback.models import RollbackRun

    runs = RollbackRun.objects.filter(trigger="rollout", trigger_ref=str(rollout.pk))
    return [
        {
            "id": run.pk,
            "level": run.level,
            "status": run.status,
            "reason": run.reason,
            "error": run.error,
            "actor": run.actor_name,
            "created_at": _iso(run.created_at),
            "finished_at": _iso(run.finished_at),
            "steps": [
                {
                    "position": step.position,
                    "level": step.level,
                    "actuator": step.actuator,
                    "status": step.status,
                    "attempts": step.attempts,
                    "output": step.output,
                    "error": step.error,
                    "started_at": _iso(step.started_at),
                    "finished_at": _iso(step.finished_at),
                }
                for step in run.steps.order_by("position")
            ],
        }
        for run in runs.order_by("created_at", "id").prefetch_related("steps")
    ]


def _explain(event: AuditEvent) -> str:
    details = event.details or {}
    if event.action == "rollout.transition":
        text = (
            f"{details.get('from')} -> {details.get('to')}: {details.get('reason', '')}"
        )
        if details.get("level"):
            text += f" (rollback level {details['level']})"
        return text
    if event.action == "rollout.created":
        after = event.after or {}
        return (
            f"draft with {len(after.get('phases') or [])} phases and "
            f"{len(after.get('checks') or [])} checks"
        )
    if event.action == "rollout.phase_advanced":
        return (
            f"phase {(event.before or {}).get('name')} -> {(event.after or {}).get('name')}: "
            f"{details.get('reason', '')}"
        )
    if event.action.startswith("check."):
        text = f"{details.get('check', event.target_repr)} {details.get('explanation', '')}"
        if details.get("measurement"):
            text += f" (measured: {details['measurement']})"
        return text.strip()
    if event.action == "rollout.rollback_started":
        return (
            f"rollback run {details.get('rollback_run')} at level {details.get('level')}"
            f": {details.get('reason', '')}"
        )
    if event.action == "rollout.phase_failed":
        return (
            f"phase {_number(details.get('phase'))} failed "
            f"({details.get('on_failure')}): "
            f"{details.get('reason', '')}"
        )
    return str(details.get("reason", "")) if details.get("reason") else event.action


def _number(index: Any) -> Any:
    """Return a 0-based phase index as the 1-based number people read."""
    return index + 1 if isinstance(index, int) else index


def _decisions(events: list[AuditEvent]) -> list[dict]:
    return [
        {
            "at": _iso(event.created_at),
            "action": event.action,
            "actor": f"{event.actor_type}:{event.actor_name}",
            "explanation": _explain(event),
            "details": event.details,
        }
        for event in events
    ]


def report_build(rollout: Rollout, *, now: dt.datetime | None = None) -> dict:
    """Return the report of ``rollout`` as JSON-ready data (no writes)."""
    now = now or clock.now()
    rollout = Rollout.objects.select_related("flag", "environment").get(pk=rollout.pk)
    checks = _checks(rollout)
    events = _rollout_events(rollout, [c["id"] for c in checks])
    phases = _phases(rollout, events, now)
    evidence = phases_evidence(rollout, events)
    cohorts = _cohorts(rollout, phases, now)
    verdict, reasons, notes = verdict_derive(rollout, checks, evidence, events)
    detectable = None
    if (rollout.merchant_baseline or {}).get("merchants") is not None:
        from canary.detectability import rollout_detectable

        # What each phase could detect with the baselines captured at start:
        # how much a "not worse" (or no "worse") was worth.
        detectable = rollout_detectable(rollout, now=now)
    return {
        "rollout": {
            "id": rollout.pk,
            "name": rollout.name,
            "flag": rollout.flag.key,
            "environment": rollout.environment.key,
            "status": rollout.status,
            "treatment": rollout.treatment_variation,
            "control": rollout.control_variation,
            "current_phase": rollout.current_phase,
            "created_by": rollout.created_by,
            "created_at": _iso(rollout.created_at),
            "started_at": _iso(rollout.started_at),
            "finished_at": _iso(rollout.finished_at),
            "duration_seconds": _seconds(
                rollout.started_at,
                rollout.finished_at or (now if rollout.started_at else None),
            ),
            "pause_reason": rollout.pause_reason,
            "deployment": rollout.deployment_id,
            "check_template": rollout.check_template,
        },
        "verdict": verdict,
        "reasons": reasons,
        "notes": notes,
        "phases": phases,
        "evidence": evidence,
        "detectable": detectable,
        "checks": checks,
        "cohorts": cohorts,
        "rollbacks": _rollbacks(rollout),
        "decisions": _decisions(events),
        "generated_at": _iso(now),
    }
