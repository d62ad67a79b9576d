"""The controller's evidence, per phase and per check, for the report.

The report's verdict must rest on what the controller itself saw and did,
never on a second test: this module reads the check runs' answers
(``detail["answer"]``: worse / not_worse / not_yet, or for runs recorded
before answers existed ``canary.health.answer_of(verdict)``) with their
comparisons (``detail["comparison"]``, ``canary.sequential.Comparison``),
and the gate decisions in the audit log (advance, pause, rollback, await
approval, abort), and returns them as plain data per phase.

A run recorded after its phase was over (``detail["outcome"]`` starts with
``stale:``: it was claimed before an advance) took no part in the phase's
decision: the answer *at the decision* ignores it, the *latest* answer does
not. Nothing here writes.
"""

from __future__ import annotations

from typing import Any

from canary import health
from canary.models import CheckMode, CheckRun, Rollout, RolloutStatus
from canary.services.comparisons import COMPARE_METRICS

WORSE, NOT_WORSE, NOT_YET = health.WORSE, health.NOT_WORSE, health.NOT_YET
ANSWERS = (WORSE, NOT_WORSE, NOT_YET)
# Decisions a phase can end with (or be in), from the audit log.
ADVANCE, WAIT, PAUSE, ROLLBACK = "advance", "wait", "pause", "rollback"
AWAIT_APPROVAL, ABORT, RESUME = "await_approval", "abort", "resume"
# Rollout statuses a phase's evidence can still change in.
_ACTIVE = (
    RolloutStatus.RUNNING,
    RolloutStatus.PAUSED,
    RolloutStatus.AWAITING_APPROVAL,
)


def compare_metric(check: Any) -> str | None:
    """Return the ``canary.sequential`` metric a compare check compares."""
    spec = check.spec if isinstance(check.spec, dict) else {}
    return COMPARE_METRICS.get(spec.get("metric"))


def answer_of_run(run: CheckRun) -> str:
    """Return the answer a run gave: its recorded one, else its verdict's."""
    answer = (run.detail or {}).get("answer")
    return answer if answer in ANSWERS else health.answer_of(run.verdict)


def _is_stale(run: CheckRun) -> bool:
    return str((run.detail or {}).get("outcome", "")).startswith("stale:")


def _decision_of(event: Any) -> tuple[int | None, str | None]:
    """Return (phase index, decision) an audit event records, or Nones."""
    details = event.details or {}
    if event.action == "rollout.phase_advanced":
        return int((event.before or {}).get("phase", 0)), ADVANCE
    if event.action != "rollout.transition":
        return None, None
    phase = details.get("phase")
    phase = int(phase) if phase is not None else None
    to, before = details.get("to"), details.get("from")
    if to == RolloutStatus.COMPLETED:
        return phase, ADVANCE
    if to == RolloutStatus.PAUSED:
        return phase, PAUSE
    if to == RolloutStatus.ROLLING_BACK:
        return phase, ROLLBACK
    if to == RolloutStatus.AWAITING_APPROVAL:
        return phase, AWAIT_APPROVAL
    if to == RolloutStatus.ABORTED:
        return phase, ABORT
    if to == RolloutStatus.RUNNING and before in (
        RolloutStatus.PAUSED,
        RolloutStatus.AWAITING_APPROVAL,
    ):
        return phase, RESUME
    return None, None


def phase_decisions(events: list[Any]) -> dict[int, list[dict]]:
    """Return, per phase index, the gate decisions the audit log records,
    oldest first: ``{"at", "decision", "by", "reason", "checks"}`` where
    ``checks`` is what the decision cited per check (its audit details)."""
    found: dict[int, list[dict]] = {}
    for event in events:
        phase, decision = _decision_of(event)
        if decision is None or phase is None:
            continue
        details = event.details or {}
        found.setdefault(phase, []).append(
            {
                "at": event.created_at.isoformat(),
                "decision": decision,
                "by": f"{event.actor_type}:{event.actor_name}",
                "reason": details.get("reason", ""),
                "checks": [
                    c for c in details.get("checks") or [] if isinstance(c, dict)
                ],
            }
        )
    return found


def _final_decision(
    rollout: Rollout, index: int, reached: bool, decisions: list[dict]
) -> str | None:
    """Return the decision the phase ended with, ``wait`` while it is
    current and undecided, None when it was never reached."""
    if not reached:
        return None
    if index == rollout.current_phase and rollout.status in _ACTIVE:
        # Still in the phase: paused or awaiting approval right now, else
        # the gate holds (waits) for evidence or time.
        if rollout.status == RolloutStatus.PAUSED:
            return PAUSE
        if rollout.status == RolloutStatus.AWAITING_APPROVAL:
            return AWAIT_APPROVAL
        return WAIT
    ends = [d["decision"] for d in decisions if d["decision"] != RESUME]
    return ends[-1] if ends else None


_COMPARISON_KEYS = (
    "metric",
    "estimate",
    "lower",
    "upper",
    "margin",
    "alpha",
    "rule",
    "treated_merchants",
    "control_merchants",
    "treated_events",
    "control_events",
    "drift_correction",
    "more_events",
)


def _comparison_fields(run: CheckRun | None) -> dict:
    """Return the run's estimate, interval, margin and evidence: its
    comparison's when it has one, else its value (a threshold check)."""
    fields: dict[str, Any] = dict.fromkeys(_COMPARISON_KEYS)
    fields["explanation"] = ""
    if run is None:
        return fields
    detail = run.detail or {}
    comparison = detail.get("comparison")
    if isinstance(comparison, dict):
        fields.update({key: comparison.get(key) for key in _COMPARISON_KEYS})
        fields["explanation"] = comparison.get("explanation") or detail.get(
            "message", ""
        )
    else:
        fields.update(
            estimate=run.value, rule="threshold", explanation=detail.get("message", "")
        )
    return fields


def _check_evidence(check: Any, runs: list[CheckRun], decision: dict | None) -> dict:
    counted = {answer: 0 for answer in ANSWERS}
    for run in runs:
        counted[answer_of_run(run)] += 1
    in_time = [run for run in runs if not _is_stale(run)]
    at_decision = in_time[-1] if in_time else None
    latest = runs[-1] if runs else None
    first_worse = next((r for r in runs if answer_of_run(r) == WORSE), None)
    cited = next(
        (c for c in (decision or {}).get("checks", []) if c.get("check") == check.name),
        None,
    )
    fields = _comparison_fields(at_decision)
    if check.mode == CheckMode.COMPARE:
        # No comparison yet: still say what it compares, against which margin.
        fields["metric"] = fields["metric"] or compare_metric(check)
        fields["margin"] = (
            fields["margin"] if fields["margin"] is not None else check.margin
        )
        fields["rule"] = fields["rule"] or "no_data"
    return {
        "check": check.name,
        "check_id": check.pk,
        "provider": check.provider,
        "mode": check.mode,
        "dry_run": check.dry_run,
        "comparator": check.comparator,
        "threshold": check.threshold,
        "measurements": len(runs),
        "answers": counted,
        # The answer the phase's decision rested on (the last run measured
        # while the phase was current), and the very last one.
        "answer": answer_of_run(at_decision) if at_decision else None,
        "latest_answer": answer_of_run(latest) if latest else None,
        "measured_at": at_decision.measured_at.isoformat() if at_decision else None,
        "check_run": at_decision.pk if at_decision else None,
        "value": at_decision.value if at_decision else None,
        "verdict": at_decision.verdict if at_decision else None,
        "note": str((at_decision.detail or {}).get("note", "")) if at_decision else "",
        "first_worse_at": first_worse.measured_at.isoformat() if first_worse else None,
        **fields,
        "cited_by_decision": cited,
    }


def phases_evidence(rollout: Rollout, events: list[Any]) -> list[dict]:
    """Return per phase: its gate, the decisions taken in it, the decision
    it ended with (or waits in), and per check the evidence (see module)."""
    checks = list(rollout.checks.order_by("id"))
    runs: dict[tuple[int, int], list[CheckRun]] = {}
    for run in CheckRun.objects.filter(rollout=rollout).order_by("measured_at", "id"):
        runs.setdefault((run.phase_index, run.health_check_id), []).append(run)
    decisions = phase_decisions(events)
    result = []
    for phase in rollout.phases.order_by("index"):
        reached = rollout.started_at is not None and (
            phase.index <= rollout.current_phase
        )
        taken = decisions.get(phase.index, [])
        final = _final_decision(rollout, phase.index, reached, taken)
        deciding = next((d for d in reversed(taken) if d["decision"] == final), None)
        entries = []
        for check in checks:
            entry = _check_evidence(
                check, runs.get((phase.index, check.pk), []), deciding
            )
            entry["decision"] = final
            entries.append(entry)
        result.append(
            {
                "index": phase.index,
                "name": phase.name,
                "gate": phase.gate,
                "reached": reached,
                "left": reached
                and (
                    phase.index < rollout.current_phase
                    or rollout.status == RolloutStatus.COMPLETED
                ),
                "decision": final,
                "decided_at": deciding["at"] if deciding else None,
                "decided_by": deciding["by"] if deciding else None,
                "decision_reason": deciding["reason"] if deciding else "",
                "decisions": taken,
                "checks": entries,
            }
        )
    return result
