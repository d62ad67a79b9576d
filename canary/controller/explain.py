"""The explanation an automatic decision carries.

``explain_checks`` says, per check, what was measured against which
threshold and which limit was crossed (kept in the audit event details);
``explain`` turns that into the one-line reason (and a pause's
``Rollout.pause_reason``).
"""

from __future__ import annotations

from canary.health import GateDecision
from canary.models import CheckRun, CheckStatus, HealthCheck, Rollout, Verdict


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


def explain(decision: GateDecision, explained: list[dict]) -> str:
    if explained:
        return "; ".join(_sentence(item) for item in explained)
    return "; ".join(decision.reasons)
