"""Health checks: validate definitions, judge measurements, record check runs.

The controller measures a check through its provider with no transaction
open, then calls ``check_judge`` (pure, no writes) and ``check_run_record``
(one short transaction). ``rollout_gate`` reads a rollout's checks and asks
``canary.health.phase_gate`` whether the phase may advance.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from canary import analysis, clock, health
from canary.exceptions import InvalidInput, NotFound
from canary.models import (
    CheckMode,
    CheckRun,
    CheckStatus,
    Comparator,
    HealthCheck,
    NoDataVerdict,
    OnFailure,
    Provider,
    Rollout,
    Verdict,
)
from canary.services._common import known_fields_object, phase_running_time
from canary.services.comparisons import COMPARE_METRICS, compare_judge
from controlplane.audit.actors import CONTROLLER
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.conf import setting

_CHECK_FIELDS = {
    "name",
    "provider",
    "spec",
    "comparator",
    "threshold",
    "mode",
    "relative_tolerance",
    "interval",
    "min_samples",
    "failure_limit",
    "inconclusive_limit",
    "consecutive_error_limit",
    "no_data",
    "on_failure",
    "timeout",
    "margin",
    "alpha",
    "dry_run",
}
_DEFAULTS: dict[str, Any] = {
    "comparator": Comparator.LT,
    "threshold": None,
    "mode": CheckMode.ABSOLUTE,
    "relative_tolerance": 0.2,
    "interval": 30,
    "min_samples": 1,
    "failure_limit": 0,
    "inconclusive_limit": 3,
    "consecutive_error_limit": 3,
    "no_data": NoDataVerdict.INCONCLUSIVE,
    "on_failure": OnFailure.ROLLBACK_1,
    "timeout": 10.0,
    "margin": None,
    "alpha": 0.05,
    "dry_run": False,
}


# Creating or changing a sql check runs its author's query on a database:
# interfaces that act for a person (API, admin) require this permission on
# top of the rollout and health check ones; commands run as operators.
SQL_CHECK_PERMISSION = "canary.manage_sql_checks"


def checks_need_sql_permission(*definitions: Any) -> bool:
    """Return whether writing ``definitions`` needs ``SQL_CHECK_PERMISSION``.

    Each item is a check definition (a dict), a list of them, or a
    ``HealthCheck`` row (the check before a change): any sql one counts.
    """
    for definition in definitions:
        if isinstance(definition, list | tuple):
            if checks_need_sql_permission(*definition):
                return True
        elif isinstance(definition, HealthCheck):
            if definition.provider == Provider.SQL:
                return True
        elif isinstance(definition, Mapping):
            if definition.get("provider") == Provider.SQL:
                return True
    return False


def _number(
    value: Any,
    field: str,
    *,
    minimum: float | None = None,
    integer: bool = False,
    above: float | None = None,
) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{field}: must be a number", field=field)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(f"{field}: must be a finite number", field=field)
    if integer and int(value) != value:
        raise InvalidInput(f"{field}: must be a whole number", field=field)
    if minimum is not None and value < minimum:
        raise InvalidInput(f"{field}: must be at least {minimum:g}", field=field)
    if above is not None and value <= above:
        raise InvalidInput(f"{field}: must be more than {above:g}", field=field)
    return int(value) if integer else float(value)


def _choice(value: Any, field: str, choices: list[str]) -> str:
    if value not in choices:
        raise InvalidInput(f"{field}: must be one of {', '.join(choices)}", field=field)
    return value


def _provider_spec(provider: str, spec: Any, prefix: str) -> dict:
    """Validate ``spec`` with the provider's own rules when it is installed."""
    try:
        from canary.providers import PROVIDERS
    except ImportError:  # providers not installed: keep the spec as given
        PROVIDERS = {}
    if not isinstance(spec, dict):
        raise InvalidInput(f"{prefix}.spec: must be an object", field=f"{prefix}.spec")
    implementation = PROVIDERS.get(provider)
    if implementation is None:
        return spec
    try:
        return implementation.validate_spec(spec)
    except InvalidInput as exc:
        field = f"{prefix}.{exc.field}" if exc.field else f"{prefix}.spec"
        message = (
            exc.message if exc.message.startswith(field) else f"{field}: {exc.message}"
        )
        raise InvalidInput(message, field=field) from None


def checks_clean(checks: Any) -> list[dict]:
    """Return check definitions with defaults filled in, or raise InvalidInput.

    Each error names its field, e.g. ``checks[1].threshold``. Absolute mode
    needs a threshold; cohort mode reads ``threshold`` as the significance
    level alpha (default 0.05) and ``relative_tolerance`` as the practical
    tolerance. ``min_samples`` is at least 1: missing data never promotes.
    """
    if checks is None:
        return []
    if not isinstance(checks, list):
        raise InvalidInput("checks: must be a list", field="checks")
    cleaned: list[dict] = []
    names: set[str] = set()
    for i, raw in enumerate(checks):
        prefix = f"checks[{i}]"
        known_fields_object(raw, _CHECK_FIELDS, prefix)
        check = {**_DEFAULTS, **raw}
        name = check.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise InvalidInput(
                f"{prefix}.name: a name of 1 to 100 characters is required",
                field=f"{prefix}.name",
            )
        check["name"] = name = name.strip()
        if name in names:
            raise InvalidInput(
                f"{prefix}.name: duplicate check name {name!r}", field=f"{prefix}.name"
            )
        names.add(name)
        check["provider"] = _choice(
            check.get("provider"), f"{prefix}.provider", Provider.values
        )
        check["comparator"] = _choice(
            check["comparator"], f"{prefix}.comparator", Comparator.values
        )
        check["mode"] = _choice(check["mode"], f"{prefix}.mode", CheckMode.values)
        check["no_data"] = _choice(
            check["no_data"], f"{prefix}.no_data", NoDataVerdict.values
        )
        check["on_failure"] = _choice(
            check["on_failure"], f"{prefix}.on_failure", OnFailure.values
        )
        if check["threshold"] is not None:
            check["threshold"] = _number(check["threshold"], f"{prefix}.threshold")
        if check["mode"] == CheckMode.ABSOLUTE and check["threshold"] is None:
            raise InvalidInput(
                f"{prefix}.threshold: required in absolute mode",
                field=f"{prefix}.threshold",
            )
        if check["mode"] == CheckMode.COHORT:
            if check["provider"] != Provider.OUTCOMES:
                raise InvalidInput(
                    f"{prefix}.mode: cohort comparison needs the outcomes provider",
                    field=f"{prefix}.mode",
                )
            if check["threshold"] is not None and not 0 < check["threshold"] < 1:
                raise InvalidInput(
                    f"{prefix}.threshold: in cohort mode the significance level must be "
                    "between 0 and 1",
                    field=f"{prefix}.threshold",
                )
        if check["mode"] == CheckMode.COMPARE:
            _compare_clean(check, prefix)
        elif check["margin"] is not None:
            raise InvalidInput(
                f"{prefix}.margin: only compare mode has a margin",
                field=f"{prefix}.margin",
            )
        check["alpha"] = _number(check["alpha"], f"{prefix}.alpha", above=0)
        if not check["alpha"] < 0.5:
            raise InvalidInput(
                f"{prefix}.alpha: must be below 0.5", field=f"{prefix}.alpha"
            )
        if not isinstance(check["dry_run"], bool):
            raise InvalidInput(
                f"{prefix}.dry_run: must be true or false", field=f"{prefix}.dry_run"
            )
        check["relative_tolerance"] = _number(
            check["relative_tolerance"], f"{prefix}.relative_tolerance", minimum=0
        )
        check["interval"] = _number(
            check["interval"], f"{prefix}.interval", minimum=1, integer=True
        )
        check["min_samples"] = _number(
            check["min_samples"], f"{prefix}.min_samples", minimum=1, integer=True
        )
        for limit in ("failure_limit", "inconclusive_limit", "consecutive_error_limit"):
            check[limit] = _number(
                check[limit], f"{prefix}.{limit}", minimum=0, integer=True
            )
        check["timeout"] = _number(check["timeout"], f"{prefix}.timeout", above=0)
        check["spec"] = _provider_spec(
            check["provider"], check.get("spec") or {}, prefix
        )
        cleaned.append(check)
    return cleaned


def _compare_clean(check: dict, prefix: str) -> None:
    """Fill in and validate a compare-mode check (outcomes provider only:
    it needs per-merchant events and baselines)."""
    from canary import sequential

    if check["provider"] != Provider.OUTCOMES:
        raise InvalidInput(
            f"{prefix}.mode: compare mode needs the outcomes provider",
            field=f"{prefix}.mode",
        )
    metric = (
        (check.get("spec") or {}).get("metric")
        if isinstance(check.get("spec"), dict)
        else None
    )
    if metric not in COMPARE_METRICS:
        raise InvalidInput(
            f"{prefix}.spec.metric: compare mode needs one of "
            f"{', '.join(COMPARE_METRICS)}",
            field=f"{prefix}.spec.metric",
        )
    if check["margin"] is None:
        check["margin"] = sequential.DEFAULT_MARGINS[COMPARE_METRICS[metric]]
    check["margin"] = _number(check["margin"], f"{prefix}.margin", above=0)
    if metric == "error_rate" and not check["margin"] < 1:
        raise InvalidInput(
            f"{prefix}.margin: an error-rate margin is a ratio below 1 (0.01 = 1 pp)",
            field=f"{prefix}.margin",
        )
    if check["threshold"] is not None:
        raise InvalidInput(
            f"{prefix}.threshold: compare mode has a margin, not a threshold",
            field=f"{prefix}.threshold",
        )


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
) -> tuple[health.Judgement, dict]:
    """Return the verdict of one measurement of ``check`` and its detail.

    Pure apart from reading ``check`` and its rollout's baseline: nothing
    is written. For cohort mode, ``cohorts`` (from the outcomes provider)
    is compared with ``canary.analysis.cohort_compare``: ``threshold`` is
    alpha (default 0.05), ``relative_tolerance`` the practical tolerance,
    the minimum cohort size comes from the CANARY_COHORT_MIN_SAMPLES setting.
    The detail holds the threshold, baseline, cohort statistics and the
    message, ready for ``check_run_record``.
    """
    if check.mode == CheckMode.COMPARE:
        # ``merchants``: the outcomes provider's per-merchant windows.
        return compare_judge(check, merchants=merchants, error=error)
    rules = check_rules(check)
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
                state, None, outcome.next_delay, f"stale: phase {phase_index} is over"
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
