"""Judge compare-mode checks: merchant windows against their baselines.

``compare_judge`` turns one measurement of a compare check (the outcomes
provider's per-merchant windows of the current range) and the rollout's
captured baselines (``Rollout.merchant_baseline``) into the verdict the
check's counters take and the detail kept with the check run. The
statistics are ``canary.sequential.compare``: the answer is *worse*
(verdict fail), *not worse* (pass) or *not yet* (not_yet, which counts
toward no limit: a prove phase waits, bounded by its max_duration).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canary import attribution, health, sequential
from canary.models import HealthCheck, Verdict

# The outcomes metric of a compare check -> the metric canary.sequential
# compares.
COMPARE_METRICS = {
    "error_rate": "error_rate",
    "p50_ms": "p50",
    "p95_ms": "p95",
    "p99_ms": "p99",
}
_VERDICTS = {
    sequential.WORSE: Verdict.FAIL,
    sequential.NOT_WORSE: Verdict.PASS,
    sequential.NOT_YET: Verdict.NOT_YET,
}


def _window(data: Mapping) -> sequential.Window:
    return sequential.Window(
        events=int(data.get("events") or 0),
        failures=int(data.get("failures") or 0),
        p50_ms=data.get("p50_ms"),
        p95_ms=data.get("p95_ms"),
        p99_ms=data.get("p99_ms"),
        p50_above=_count(data.get("p50_above")),
        p95_above=_count(data.get("p95_above")),
        p99_above=_count(data.get("p99_above")),
    )


def _count(value: Any) -> int | None:
    return None if value is None else int(value)


def interaction_alpha(pairs: int) -> float:
    """Return the alpha of one interaction test: the setting
    CANARY_RELEASE_INTERACTION_ALPHA split over a member's pairs."""
    from controlplane.conf import setting

    return float(setting("CANARY_RELEASE_INTERACTION_ALPHA")) / max(1, pairs)


def merchant_aggregates(
    baselines: Mapping[str, Mapping], windows: Mapping[str, Mapping]
) -> list[sequential.MerchantAggregate]:
    """Pair each merchant's current window with its baseline (merchants
    without a baseline are left out: they have nothing to compare with)."""
    return [
        sequential.MerchantAggregate(key, _window(baselines[key]), _window(current))
        for key, current in sorted(windows.items())
        if key in baselines
    ]


def _note(comparison: sequential.Comparison, baselines: Mapping) -> str:
    if comparison.decision != sequential.NOT_YET:
        return ""
    if not baselines:
        return "no merchant has a baseline (no outcome events before start)"
    if comparison.rule == "no_data":
        return "no treated merchant with a baseline has events in this phase yet"
    if comparison.more_events is None:
        return "the estimate is at or past the margin: waiting for worse or better"
    more = max(0, round(comparison.treated_events * (comparison.more_events - 1)))
    return (
        f"needs about {comparison.more_events:.1f}x the treated events so far "
        f"(~{more:,} more)"
    )


def compare_judge(
    check: HealthCheck,
    *,
    merchants: Mapping | None,
    error: str | None = None,
) -> tuple[health.Judgement, dict[str, Any]]:
    """Return the verdict and detail of one compare-mode measurement."""
    spec = check.spec or {}
    metric = COMPARE_METRICS.get(spec.get("metric", ""), "error_rate")
    detail: dict[str, Any] = {
        "mode": check.mode,
        "margin": check.margin,
        "alpha": check.alpha,
    }
    if error is not None:
        judgement = health.Judgement(Verdict.ERROR, f"provider error: {error}")
        detail.update(message=judgement.message, error=error, answer=health.NOT_YET)
        return judgement, detail
    captured = check.rollout.merchant_baseline or {}
    baselines = captured.get("merchants") or {}
    windows = merchants or {}
    treated = merchant_aggregates(baselines, windows.get("treatment") or {})
    control_windows = windows.get("control") or {}
    frozen = False
    # A 100% phase: the previous phase's control, frozen, even when a few
    # control events served before the move landed in this range.
    if windows.get("previous_control"):
        control_windows, frozen = windows["previous_control"], True
    control = merchant_aggregates(baselines, control_windows)
    comparison = sequential.compare(
        metric=metric,
        treated=treated,
        control=control,
        control_is_frozen=frozen,
        margin=check.margin,
        alpha=check.alpha,
    )
    judgement = health.Judgement(
        _VERDICTS[comparison.decision], comparison.explanation, comparison.margin
    )
    loader = windows.get("siblings_loader")
    if loader is not None and not frozen and comparison.decision == sequential.WORSE:
        # A release member that says worse: its effect with and without
        # each other member's treatment, which the release's attribution
        # reads (canary.controller.release_decide).
        siblings = loader()
        detail["interactions"] = {
            other: attribution.interaction(
                metric=metric,
                treated=treated,
                control=control,
                other_treated=merchants_of_other,
                alpha=interaction_alpha(len(siblings)),
            )
            for other, merchants_of_other in siblings.items()
        }
    detail.update(
        message=comparison.explanation,
        answer=comparison.decision,
        comparison=comparison.as_dict(),
        note=_note(comparison, baselines),
        samples=comparison.treated_events,
        recorded_value=comparison.estimate,
        baseline_merchants=len(baselines),
    )
    return judgement, detail
