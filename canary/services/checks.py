"""Health checks: judge measurements, record check runs, gate phases.

(Check definitions are validated by ``canary.services.definitions``.)

The controller measures a check through its provider with no transaction
open, then calls ``check_judge`` (pure, no writes) and ``check_run_record``
(one short transaction). ``rollout_gate`` reads a rollout's checks and asks
``canary.health.phase_gate`` whether the phase may advance.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from canary import analysis, clock, health
from canary.exceptions import InvalidInput, NotFound
from canary.models import (
    CheckMode,
    CheckRun,
    CheckStatus,
    HealthCheck,
    Rollout,
    Verdict,
)
from canary.services._common import phase_running_time
from canary.services.comparisons import compare_judge
from canary.services.definitions import (  # noqa: F401 - re-exported
    SQL_CHECK_PERMISSION,
    checks_clean,
    checks_need_sql_permission,
)
from controlplane.audit.actors import CONTROLLER
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.conf import setting


def check_rules(check: HealthCheck) -> health.CheckRules:
    """Return the pure rules of ``check`` for ``canary.health``."""
    return health.CheckRules(
        comparator=check.comparator,
        threshold=check.threshold,
        mode=check.mode,
        relative_tolerance=check.relative_tolerance,
        interval=float(check.interval),
        min_samples=check.min_samples,
        failure_limit=check.failure_limit,
        inconclusive_limit=check.inconclusive_limit,
        consecutive_error_limit=check.consecutive_error_limit,
        no_data=check.no_data,
        on_failure=check.on_failure,
    )


def check_state(
    check: HealthCheck, phase_index: int | None = None
) -> health.CheckState:
    """Return ``check``'s counters in ``phase_index`` (fresh ones for another
    phase: counters are per phase)."""
    if phase_index is not None and check.state_phase != phase_index:
        return health.CheckState()
    return health.CheckState(
        status=check.status,
        pass_count=check.pass_count,
        consecutive_failures=check.consecutive_failures,
        consecutive_errors=check.consecutive_errors,
        inconclusive_count=check.inconclusive_count,
    )


def check_judge(
    check: HealthCheck,
    *,
    value: float | None,
    error: str | None = None,
    samples: int | None = None,
    cohorts: Mapping | None = None,
    baseline: float | None = None,
    merchants: Mapping | None = None,
    comparison: float | None = None,
) -> tuple[health.Judgement, dict]:
    """Return the verdict of one measurement of ``check`` and its detail.

    Pure apart from reading ``check`` and its rollout's baseline: nothing
    is written. For cohort mode, ``cohorts`` (from the outcomes provider)
    is compared with ``canary.analysis.cohort_compare``: ``threshold`` is
    alpha (default 0.05), ``relative_tolerance`` the practical tolerance,
    the minimum cohort size comes from the CANARY_COHORT_MIN_SAMPLES setting.
    ``comparison`` (a prometheus ``comparison_query`` or sql
    ``comparison_column`` measured alongside) is the live baseline of a
    relative check. Compare mode goes to ``compare_judge`` with
    ``merchants``. The detail holds the threshold, baseline, cohort
    statistics, the message and the answer (worse / not_worse / not_yet),
    ready for ``check_run_record``.
    """
    if check.mode == CheckMode.COMPARE:
        # ``merchants``: the outcomes provider's per-merchant windows.
        return compare_judge(check, merchants=merchants, error=error)
    rules = check_rules(check)
    if comparison is not None and check.mode == CheckMode.RELATIVE:
        # A comparison query measured alongside (prometheus, sql): the
        # live value this measurement is judged against.
        baseline = comparison
    if baseline is None and check.mode == CheckMode.RELATIVE:
        baseline = (check.rollout.baseline or {}).get(check.name)
    comparison = None
    if check.mode == CheckMode.COHORT and error is None and cohorts:
        metric = (check.spec or {}).get("metric", "error_rate")
        kind = "error_rate" if metric == "error_rate" else "duration"
        comparison = analysis.cohort_compare(
            cohorts,
            metric=metric,
            alpha=check.threshold or analysis.DEFAULT_ALPHA,
            min_samples=setting("CANARY_COHORT_MIN_SAMPLES")[kind],
            tolerance=check.relative_tolerance,
        ).as_dict()
    judgement = health.judge(
        rules,
        value=value,
        error=error,
        samples=samples,
        baseline=baseline,
        cohort=comparison,
    )
    detail: dict[str, Any] = {
        "message": judgement.message,
        "comparator": check.comparator,
        "threshold": check.threshold,
        "limit": judgement.limit,
        "mode": check.mode,
    }
    if baseline is not None:
        detail["baseline"] = baseline
        detail["relative_tolerance"] = check.relative_tolerance
    if comparison is not None:
        detail["cohort"] = comparison
    if samples is not None:
        detail["samples"] = samples
    if error is not None:
        detail["error"] = error
    detail["answer"] = health.answer_of(judgement.verdict)
    return judgement, detail


def checks_reset(*, rollout: Rollout, phase_index: int, now: dt.datetime) -> None:
    """Start every check of ``rollout`` afresh for ``phase_index``, due now.

    Call inside the transaction that changes the phase (or resumes).
    """
    HealthCheck.objects.filter(rollout=rollout).update(
        status=CheckStatus.PENDING,
        state_phase=phase_index,
        pass_count=0,
        consecutive_failures=0,
        consecutive_errors=0,
        inconclusive_count=0,
        next_due_at=now,
    )


def check_run_record(
    *,
    check_id: int,
    phase_index: int,
    value: float | None,
    verdict: str,
    detail: dict | None = None,
    measured_at: dt.datetime | None = None,
    actor: Any = CONTROLLER,
) -> tuple[CheckRun, health.CheckOutcome]:
    """Keep one measurement and move the check's per-phase counters.

    Every measurement is kept. A measurement of another phase than the
    rollout's current one (it advanced meanwhile) is kept but changes no
    counter (``outcome.crossed`` is None then). When the verdict crosses a
    limit, write one audit event (``check.failed``, ``check.inconclusive``
    or ``check.errored``) that says which values crossed which limit. Set
    ``next_due_at`` (sooner after an error). Raise NotFound for an unknown
    check and InvalidInput for an unknown verdict.
    """
    if verdict not in Verdict.values:
        raise InvalidInput(
            f"verdict: must be one of {', '.join(Verdict.values)}", field="verdict"
        )
    measured_at = measured_at or clock.now()
    with audited_transaction():
        check = HealthCheck.objects.select_for_update().filter(pk=check_id).first()
        if check is None:
            raise NotFound(f"unknown health check {check_id}", field="check_id")
        rollout = Rollout.objects.select_related("environment").get(pk=check.rollout_id)
        rules = check_rules(check)
        is_current = phase_index == rollout.current_phase
        state = check_state(check, phase_index)
        outcome = health.check_state_update(rules, state, verdict)
        if not is_current:
            outcome = health.CheckOutcome(
                state,
                None,
                outcome.next_delay,
                f"stale: phase {phase_index + 1} is over",
            )
        run = CheckRun.objects.create(
            health_check=check,
            rollout=rollout,
            phase_index=phase_index,
            value=value,
            verdict=verdict,
            detail={**(detail or {}), "outcome": outcome.message},
            measured_at=measured_at,
        )
        check.last_verdict, check.last_value, check.last_run_at = (
            verdict,
            value,
            measured_at,
        )
        fields = ["last_verdict", "last_value", "last_run_at"]
        if is_current:
            new = outcome.state
            check.status = new.status
            check.pass_count = new.pass_count
            check.consecutive_failures = new.consecutive_failures
            check.consecutive_errors = new.consecutive_errors
            check.inconclusive_count = new.inconclusive_count
            check.state_phase = phase_index
            check.next_due_at = measured_at + dt.timedelta(seconds=outcome.next_delay)
            fields += [
                "status",
                "pass_count",
                "consecutive_failures",
                "consecutive_errors",
                "inconclusive_count",
                "state_phase",
                "next_due_at",
            ]
        check.save(update_fields=fields)
        if outcome.crossed is not None:
            action = {
                CheckStatus.FAILED: "check.failed",
                CheckStatus.INCONCLUSIVE: "check.inconclusive",
                CheckStatus.ERRORED: "check.errored",
            }[outcome.crossed]
            record_audit_event(
                actor=actor,
                action=action,
                target=check,
                environment=rollout.environment.key,
                before={"status": state.status},
                after={"status": outcome.crossed},
                details={
                    "rollout": rollout.pk,
                    "phase": phase_index,
                    "check": check.name,
                    "value": value,
                    "verdict": verdict,
                    "explanation": outcome.message,
                    "measurement": (detail or {}).get("message", ""),
                    "threshold": check.threshold,
                    "comparator": check.comparator,
                    "limits": {
                        "failure_limit": check.failure_limit,
                        "inconclusive_limit": check.inconclusive_limit,
                        "consecutive_error_limit": check.consecutive_error_limit,
                    },
                    "on_failure": check.on_failure,
                    # A dry-run check crosses its limits like any other, and
                    # the gate ignores it: the event says nothing acts on it.
                    "dry_run": check.dry_run,
                    "check_run": run.pk,
                },
            )
    return run, outcome


def rollout_gate(
    *, rollout: Rollout, now: dt.datetime | None = None
) -> health.GateDecision:
    """Return the gate decision for ``rollout``'s current phase (no writes).

    Approval counts when ``approved_phase`` is at least the current phase.
    Only the phase's running time counts toward ``min_duration`` and
    ``max_duration`` (see ``phase_running_time``).
    """
    now = now or clock.now()
    phases = list(rollout.phases.order_by("index"))
    phase = phases[rollout.current_phase]
    rules = health.PhaseRules(
        index=phase.index,
        min_duration=float(phase.min_duration),
        max_duration=float(phase.max_duration)
        if phase.max_duration is not None
        else None,
        requires_approval=phase.requires_approval,
        is_last=phase.index == len(phases) - 1,
        gate=phase.gate,
    )
    checks = list(rollout.checks.order_by("id"))
    notes = _waiting_notes(rollout, checks)
    gate_checks = [
        health.GateCheck(
            name=check.name,
            state=check_state(check, rollout.current_phase),
            min_samples=check.min_samples,
            on_failure=check.on_failure,
            dry_run=check.dry_run,
            note=notes.get(check.pk, ""),
        )
        for check in checks
    ]
    return health.phase_gate(
        now,
        rules,
        rollout.phase_started_at or now,
        gate_checks,
        rollout_is_approved(rollout),
        elapsed=phase_running_time(rollout, now),
    )


def _waiting_notes(rollout: Rollout, checks: list[HealthCheck]) -> dict[int, str]:
    """Return, per compare check not passing in the current phase, what its
    last measurement said it still needs (``detail["note"]``)."""
    waiting = [
        c.pk
        for c in checks
        if c.mode == CheckMode.COMPARE
        and c.state_phase == rollout.current_phase
        and c.last_verdict == Verdict.NOT_YET
    ]
    if not waiting:
        return {}
    notes: dict[int, str] = {}
    for check_id in waiting:
        detail = (
            CheckRun.objects.filter(
                health_check_id=check_id, phase_index=rollout.current_phase
            )
            .order_by("-measured_at", "-id")
            .values_list("detail", flat=True)
            .first()
        )
        if detail and detail.get("note"):
            notes[check_id] = str(detail["note"])
    return notes


def rollout_is_approved(rollout: Rollout) -> bool:
    """Return whether an operator approved the rollout's current phase."""
    return (
        rollout.approved_phase is not None
        and rollout.approved_phase >= rollout.current_phase
    )


def rollout_check_summary(rollout: Rollout) -> dict[str, dict]:
    """Return, per check, its verdict counts and value summary over the
    whole rollout (for the ``rollout.completed`` event and the report)."""
    result: dict[str, dict] = {}
    for check in rollout.checks.order_by("id"):
        runs = list(
            check.runs.order_by("measured_at", "id").values_list("value", "verdict")
        )
        verdicts = {verdict: 0 for verdict in Verdict.values}
        for _, verdict in runs:
            verdicts[verdict] += 1
        result[check.name] = {
            "provider": check.provider,
            "mode": check.mode,
            "comparator": check.comparator,
            "threshold": check.threshold,
            "baseline": (rollout.baseline or {}).get(check.name),
            "verdicts": verdicts,
            "values": analysis.summary([value for value, _ in runs]),
            "status": check.status,
        }
    return result
