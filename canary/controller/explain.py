"""The explanation an automatic decision carries.

``explain_checks`` says, per check, what was measured against which
threshold and which limit was crossed, with the evidence (answer,
estimate, interval, margin, evidence size, rule: ``evidence``) kept in the
audit event details; ``evidence_summary`` gives the same for every check
when a phase advances;
``explain`` turns that into the one-line reason (and a pause's
``Rollout.pause_reason``).
"""

from __future__ import annotations

import datetime as dt

from canary import clock
from canary.health import GateDecision, answer_of
from canary.models import (
    CheckMode,
    CheckRun,
    CheckStatus,
    HealthCheck,
    Rollout,
    Verdict,
)


def _limit_text(check: HealthCheck) -> str:
    if check.mode == CheckMode.COMPARE and check.status == CheckStatus.FAILED:
        return (
            f"worse: its {1 - check.alpha:.0%} always-valid lower bound is above zero "
            "and the estimate above the margin"
        )
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
    # The phase counts every pass; past min_samples the need is met.
    passes = min(check.pass_count, check.min_samples)
    return f"{passes} of {check.min_samples} passing samples"


def _first_breach(runs: list[CheckRun]) -> CheckRun | None:
    """Return the first failing run of the current streak (runs newest first)."""
    first = None
    for run in runs:
        if run.verdict == Verdict.PASS:
            break
        if run.verdict == Verdict.FAIL:
            first = run
    return first


def explain_checks(rollout: Rollout, names: tuple[str, ...] | list[str]) -> list[dict]:
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
                "limit": ((last.detail or {}).get("note") if last else None)
                or _limit_text(check),
                "on_failure": check.on_failure,
                "check_run": last.pk if last else None,
                "first_breach_at": breach.measured_at.isoformat() if breach else None,
                **evidence(check, last),
            }
        )
    return explained


def evidence(check: HealthCheck, run: CheckRun | None) -> dict:
    """Return what one check's last run says, the same keys for every mode:
    the answer, the estimate and its interval, the margin (threshold for a
    threshold check), the evidence size and the rule that decided."""
    detail = (run.detail or {}) if run is not None else {}
    comparison = detail.get("comparison")
    if comparison:
        return {
            "answer": detail.get("answer", comparison.get("decision")),
            "estimate": comparison.get("estimate"),
            "lower": comparison.get("lower"),
            "upper": comparison.get("upper"),
            "margin": comparison.get("margin"),
            "alpha": comparison.get("alpha"),
            "evidence": {
                key: comparison.get(key)
                for key in (
                    "treated_merchants",
                    "treated_events",
                    "control_merchants",
                    "control_events",
                )
            },
            "rule": comparison.get("rule"),
            "drift_correction": comparison.get("drift_correction"),
            "dry_run": check.dry_run,
        }
    return {
        "answer": detail.get("answer", answer_of(run.verdict if run else None)),
        "estimate": run.value if run is not None else None,
        "lower": None,
        "upper": None,
        "margin": check.threshold,
        "alpha": None,
        "evidence": {"samples": detail.get("samples")},
        "rule": f"value {check.comparator} threshold ({check.mode})",
        "drift_correction": None,
        "dry_run": check.dry_run,
    }


def evidence_summary(rollout: Rollout) -> list[dict]:
    """Return every check's state and last evidence in the current phase:
    what an advance or an approval request was decided on."""
    summary = []
    for check in rollout.checks.order_by("id"):
        last = (
            check.runs.filter(phase_index=rollout.current_phase)
            .order_by("-measured_at", "-id")
            .first()
        )
        summary.append(
            {
                "check": check.name,
                "status": check.status,
                "passes": check.pass_count,
                "min_samples": check.min_samples,
                "value": check.last_value,
                "comparator": check.comparator,
                "threshold": check.threshold,
                "check_run": last.pk if last else None,
                **evidence(check, last),
            }
        )
    return summary


def _sentence(item: dict) -> str:
    measured = (
        item["error"] and f"provider error: {item['error']}" or item["measurement"]
    )
    return f"check {item['check']} {item['status']}: {measured} ({item['limit']})"


def explain(decision: GateDecision, explained: list[dict]) -> str:
    if explained:
        return "; ".join(_sentence(item) for item in explained)
    return "; ".join(decision.reasons)


def rollback_cause(explained: list[dict], on_failure: str) -> tuple[str, float | None]:
    """Return what an automatic rollback is counted under: the provider of
    the check that asked for ``on_failure`` ("unknown" without one), and
    the seconds since the first breach among ``explained`` (None: none)."""
    breaches = [
        dt.datetime.fromisoformat(item["first_breach_at"])
        for item in explained
        if item.get("first_breach_at")
    ]
    seconds = (clock.now() - min(breaches)).total_seconds() if breaches else None
    worst = next((i for i in explained if i["on_failure"] == on_failure), None)
    return (worst["provider"] if worst else "unknown"), seconds
