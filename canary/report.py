"""The rollout report: what happened, what was measured, and what to do now.

``report_build(rollout)`` reads a rollout, its phases, checks, check runs,
audit events, outcome events and rollback runs, and returns plain data
(JSON-ready): per phase timing, every check's values against its
threshold, a treatment-vs-control comparison with its confidence (from
``canary.analysis``) per phase and overall, the rollback actions taken, the
decisions with their explanations, and a verdict:

* ``roll back``: the change hurt: a check failed, the cohort comparison
  found the treatment significantly worse, or the rollout was rolled back;
* ``fix and re-test``: the evidence is missing or spoiled: the rollout was
  aborted or is paused, a check is inconclusive or erroring, a check never
  passed, or the rollout never started;
* ``proceed``: every check passed and nothing says the treatment is worse
  (completed, or in progress and healthy so far).

``report_markdown`` and ``report_json`` render it. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q

from canary import analysis, clock
from canary.models import CheckRun, CheckStatus, Rollout, RolloutStatus, Verdict
from controlplane.audit.models import AuditEvent
from controlplane.conf import setting

PROCEED, FIX_AND_RETEST, ROLL_BACK = "proceed", "fix and re-test", "roll back"
_SYMBOLS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "="}
# Markdown lists at most this many runs per check; JSON has them all.
MD_RUNS_PER_CHECK = 60


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


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
                "baseline": (rollout.baseline or {}).get(check.name),
                "min_samples": check.min_samples,
                "failure_limit": check.failure_limit,
                "inconclusive_limit": check.inconclusive_limit,
                "consecutive_error_limit": check.consecutive_error_limit,
                "on_failure": check.on_failure,
                "dry_run": check.dry_run,
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
                        "limit": (run.detail or {}).get("limit"),
                        "message": (run.detail or {}).get("message", ""),
                    }
                    for run in runs
                ],
            }
        )
    return result


def _compare(rollout: Rollout, since: dt.datetime, until: dt.datetime) -> dict | None:
    """Compare the cohorts' outcome events in [since, until), or None."""
    from canary.models import OutcomeEvent
    from canary.providers import MeasureContext, ProviderError
    from canary.providers.outcomes import OutcomesProvider

    if not OutcomeEvent.objects.filter(
        environment_id=rollout.environment_id,
        flag_key=rollout.flag.key,
        occurred_at__gte=since,
        occurred_at__lt=until,
    ).exists():
        return None
    ctx = MeasureContext(
        flag_key=rollout.flag.key,
        environment_key=rollout.environment.key,
        treatment_variation=rollout.treatment_variation,
        since=since,
        until=until,
    )
    try:
        measurement = OutcomesProvider().measure(
            {"metric": "error_rate"}, ctx, timeout=10.0
        )
    except ProviderError as exc:
        return {"error": exc.message}
    cohorts = measurement.cohorts or {}
    minimum = setting("CANARY_COHORT_MIN_SAMPLES")
    result: dict[str, Any] = {
        "since": _iso(since),
        "until": _iso(until),
        "treatment": {
            k: v
            for k, v in (cohorts.get("treatment") or {}).items()
            if k != "durations"
        },
        "control": {
            k: v for k, v in (cohorts.get("control") or {}).items() if k != "durations"
        },
    }
    for metric, kind in (("error_rate", "error_rate"), ("duration", "duration")):
        result[metric] = analysis.cohort_compare(
            cohorts,
            metric=metric,
            min_samples=minimum[kind],
            tolerance=0.2,
        ).as_dict()
    return result


def _cohorts(rollout: Rollout, phases: list[dict], now: dt.datetime) -> dict:
    if rollout.started_at is None:
        return {"overall": None, "phases": []}
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
                "comparison": _compare(rollout, since, until),
            }
        )
    return {"overall": _compare(rollout, rollout.started_at, end), "phases": per_phase}


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
            f"phase {details.get('phase')} failed ({details.get('on_failure')}): "
            f"{details.get('reason', '')}"
        )
    return str(details.get("reason", "")) if details.get("reason") else event.action


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


def _verdict(
    rollout: Rollout, checks: list[dict], cohorts: dict, events: list[AuditEvent]
) -> tuple[str, list[str]]:
    back: list[str] = []
    fix: list[str] = []
    if rollout.status in (RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK):
        why = next(
            (
                e
                for e in reversed(events)
                if e.action == "rollout.transition"
                and (e.details or {}).get("to") == RolloutStatus.ROLLING_BACK
            ),
            None,
        )
        reason = (why.details or {}).get("reason", "") if why else ""
        back.append(
            f"the rollout was rolled back at phase {rollout.current_phase}"
            + (f": {reason}" if reason else "")
        )
    failed_events = {
        (e.details or {}).get("check") for e in events if e.action == "check.failed"
    }
    dry = [check for check in checks if check.get("dry_run")]
    # Dry-run checks never decide (the gate skips them): not in the verdict.
    checks = [check for check in checks if not check.get("dry_run")]
    for check in checks:
        symbol = _SYMBOLS.get(check["comparator"], check["comparator"])
        if check["status"] == CheckStatus.FAILED or check["name"] in failed_events:
            last_fail = next(
                (r for r in reversed(check["runs"]) if r["verdict"] == "fail"), None
            )
            detail = (
                f": {last_fail['message']}"
                if last_fail and last_fail["message"]
                else f": last value {_fmt(check['summary']['last'])}, threshold {symbol} "
                f"{_fmt(check['threshold'])}"
            )
            back.append(f"check {check['name']} failed{detail}")
        elif check["status"] in (CheckStatus.INCONCLUSIVE, CheckStatus.ERRORED):
            fix.append(
                f"check {check['name']} is {check['status']} (missing or erroring data "
                "is no evidence of health)"
            )
        elif rollout.started_at is not None and check["verdicts"]["pass"] == 0:
            fix.append(
                f"check {check['name']} never passed ({sum(check['verdicts'].values())} "
                "measurements)"
            )
    overall = cohorts.get("overall") or {}
    for metric in ("error_rate", "duration"):
        comparison = overall.get(metric) if isinstance(overall, dict) else None
        if comparison and comparison["verdict"] == analysis.FAIL:
            back.append(
                f"cohort comparison ({metric.replace('_', ' ')}): "
                f"{comparison['explanation']}"
            )
    notes = [
        f"check {check['name']} (dry run, not deciding): {check['status']}, "
        f"{check['verdicts']['pass']} pass / {check['verdicts']['fail']} fail"
        for check in dry
    ]
    if back:
        return ROLL_BACK, back + notes
    if rollout.started_at is None:
        fix.append(
            f"the rollout never started (status {rollout.status}): nothing was measured"
        )
    elif rollout.status == RolloutStatus.ABORTED:
        fix.append("the rollout was aborted before its phases completed")
    elif rollout.status == RolloutStatus.PAUSED:
        fix.append(
            f"the rollout is paused: {rollout.pause_reason or 'no reason given'}"
        )
    if fix:
        return FIX_AND_RETEST, fix + notes
    reasons = []
    if rollout.status == RolloutStatus.COMPLETED:
        reasons.append(f"all {rollout.phases.count()} phases completed")
    else:
        reasons.append(
            f"in progress ({rollout.status}, phase {rollout.current_phase}) "
            "and healthy so far"
        )
    for check in checks:
        reasons.append(
            f"check {check['name']}: {check['verdicts']['pass']} passing "
            f"measurements, none failed"
        )
    for metric in ("error_rate", "duration"):
        comparison = overall.get(metric) if isinstance(overall, dict) else None
        if comparison and comparison["verdict"] == analysis.PASS:
            reasons.append(
                f"cohort comparison ({metric.replace('_', ' ')}): "
                f"{comparison['explanation']}"
            )
    return PROCEED, reasons + notes


def report_build(rollout: Rollout, *, now: dt.datetime | None = None) -> dict:
    """Return the report of ``rollout`` as JSON-ready data (no writes)."""
    now = now or clock.now()
    rollout = Rollout.objects.select_related("flag", "environment").get(pk=rollout.pk)
    checks = _checks(rollout)
    events = _rollout_events(rollout, [c["id"] for c in checks])
    phases = _phases(rollout, events, now)
    cohorts = _cohorts(rollout, phases, now)
    verdict, reasons = _verdict(rollout, checks, cohorts, events)
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
        "phases": phases,
        "checks": checks,
        "cohorts": cohorts,
        "rollbacks": _rollbacks(rollout),
        "decisions": _decisions(events),
        "generated_at": _iso(now),
    }
