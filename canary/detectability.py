"""What each phase of a rollout can detect, from the look-back traffic.

``rollout_detectable(rollout, now=)`` is the preflight's answer to "what
regression would this plan catch?". From the traffic before the rollout --
the rollout's ``merchant_baseline`` once it started, else the flag's
outcome events in the environment over the last ``CANARY_BASELINE_SECONDS``
-- it takes the merchants with traffic, their events per merchant per
minute, error rate and heterogeneity (the share of error-prone merchants
and how many times more error-prone they are) and the spread of their
latencies, and asks ``canary.power.minimum_detectable_effect`` for
every compare check and every phase: the smallest regression the check
says *worse* to by the phase's end with 80% power. A guard phase is judged
over its ``min_duration`` (it leaves then), a prove phase over its
``max_duration`` (the longest it may wait; ``min_duration`` without one).

Treated and control merchants per phase: a pilot or internal phase treats
its merchants that have traffic (with their own traffic and error rate),
against every other merchant with traffic; a percentage phase treats that
share of the merchants with traffic. Like the MDE itself the figures take
traffic as equal per merchant: they are estimates for planning, not
guarantees. Nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from typing import Any

from canary import power, sequential
from canary.baselines import merchant_baseline_capture
from canary.models import CheckMode, Rollout, TargetType
from canary.services.comparisons import COMPARE_METRICS
from controlplane.conf import setting

POWER = 0.8
# An MDE above this many margins is a warning: regressions well past what
# the check is meant to catch would go unseen.
MARGINS_WORTH_CATCHING = 3.0
# A merchant is error-prone when its failures exceed the typical rate's by
# this many standard deviations and at least this factor.
HEAVY_SIGMAS, HEAVY_FACTOR_MIN = 3.0, 2.0
_Z95 = statistics.NormalDist().inv_cdf(0.95)
_LABELS = {"error_rate": "errors", "p50": "p50", "p95": "p95", "p99": "p99"}


def traffic_profile(merchants: dict[str, dict], seconds: float) -> dict:
    """Return what the MDE needs from per-merchant traffic: merchants with
    traffic, events per merchant per minute, error rate, heterogeneity
    (share and factor of error-prone merchants) and the log-latency spread."""
    active = {k: v for k, v in merchants.items() if (v.get("events") or 0) > 0}
    events = sum(v["events"] for v in active.values())
    failures = sum(v.get("failures") or 0 for v in active.values())
    minutes = max(seconds, 1.0) / 60
    profile: dict[str, Any] = {
        "merchants": len(active),
        "events": events,
        "failures": failures,
        "seconds": seconds,
        "events_per_merchant_per_minute": events / len(active) / minutes
        if active
        else 0.0,
        "error_rate": failures / events if events else None,
        "baseline_rate": None,
        "heavy_share": 0.0,
        "heavy_factor": 1.0,
        "log_sigma": sequential.DEFAULT_LOG_SIGMA,
    }
    if not active:
        return profile
    rates = [(v.get("failures") or 0) / v["events"] for v in active.values()]
    typical = statistics.median(rates)
    heavy = {
        k
        for k, v in active.items()
        if (v.get("failures") or 0) / v["events"] >= HEAVY_FACTOR_MIN * typical
        and (v.get("failures") or 0)
        > v["events"] * typical + HEAVY_SIGMAS * math.sqrt(v["events"] * typical + 1)
    }
    normal = [v for k, v in active.items() if k not in heavy]
    n_events = sum(v["events"] for v in normal)
    n_failures = sum(v.get("failures") or 0 for v in normal)
    # Half a pseudo-failure: a fleet without failures still has some noise.
    base_rate = (n_failures + 0.5) / (n_events + 1)
    profile["baseline_rate"] = base_rate
    if heavy:
        h_events = sum(active[k]["events"] for k in heavy)
        h_failures = sum(active[k].get("failures") or 0 for k in heavy)
        profile["heavy_share"] = len(heavy) / len(active)
        profile["heavy_factor"] = (h_failures / h_events) / base_rate
    sigmas = [
        math.log(v["p95_ms"] / v["p50_ms"]) / _Z95
        for v in active.values()
        if v.get("p50_ms") and v.get("p95_ms") and v["p95_ms"] > v["p50_ms"] > 0
    ]
    if sigmas:
        profile["log_sigma"] = statistics.median(sigmas)
    return profile


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _effect(metric: str, value: float | None) -> str:
    if value is None:
        return "nothing"
    if metric == "error_rate":
        return f"+{value * 100:.1f} pp"
    return f"+{value * 100:.0f}%"


def _phase_cohorts(
    phase: Any, merchants: dict[str, dict], fleet: dict
) -> tuple[int, int, dict, str]:
    """Return (treated, control, traffic profile of the treated, why no
    treated merchant has traffic)."""
    if phase.target_type == TargetType.PERCENTAGE:
        share = (phase.percentage or 0) / 100
        count = fleet["merchants"]
        treated = min(count, max(1, round(count * share))) if share > 0 else 0
        return treated, count - treated, fleet, "" if treated else "no merchant treated"
    pilots = {k: merchants[k] for k in phase.pilot_merchants if k in merchants}
    profile = traffic_profile(pilots, fleet["seconds"])
    why = (
        ""
        if profile["merchants"]
        else f"its merchants ({', '.join(phase.pilot_merchants) or 'none'}) have no "
        "outcome events in the look-back window, so no baselines"
    )
    return profile["merchants"], fleet["merchants"] - profile["merchants"], profile, why


def _check_mde(
    check: Any,
    metric: str,
    profile: dict,
    treated: int,
    control: int,
    seconds: float,
    baseline_seconds: float,
    no_traffic: str,
) -> tuple[float | None, str]:
    """Return (MDE, why none) for one check in one phase."""
    if treated < 1 or profile["events_per_merchant_per_minute"] <= 0:
        return None, no_traffic or "no treated merchant has look-back traffic"
    if seconds <= 0:
        return None, "the phase has no duration to measure in"
    per_merchant = profile["events_per_merchant_per_minute"] * seconds / 60
    least = sequential.MIN_QUANTILE_EVENTS.get(metric)
    if least and per_merchant < least:
        return None, (
            f"~{per_merchant:.0f} events per merchant in {_minutes(seconds)}, below "
            f"the {least} a {metric} comparison needs per merchant"
        )
    mde = power.minimum_detectable_effect(
        metric=metric,
        treated_merchants=treated,
        control_merchants=control,
        events_per_merchant_per_minute=profile["events_per_merchant_per_minute"],
        phase_seconds=seconds,
        baseline_seconds=baseline_seconds,
        baseline_rate=profile["baseline_rate"] or 0.0,
        heavy_share=profile["heavy_share"],
        heavy_factor=profile["heavy_factor"],
        log_sigma=profile["log_sigma"],
        margin=check.margin,
        alpha=check.alpha,
        power=POWER,
    )
    return mde, ""


def _warning(phase: Any, entry: dict, seconds: float, basis: str) -> str | None:
    mde, margin, metric = entry["mde"], entry["margin"], entry["metric"]
    label = f"{_LABELS[metric]} (check {entry['check']})"
    if mde is None:
        return f"phase {phase.name}: check {entry['check']} can detect nothing: {entry['why']}"
    if mde <= MARGINS_WORTH_CATCHING * margin:
        return None
    if phase.gate == "guard":
        return (
            f"the {phase.name} phase can catch only gross regressions (> "
            f"{_effect(metric, mde)} {label}, margin {_effect(metric, margin)}) in "
            f"its {_minutes(seconds)}"
        )
    outcome = (
        "it will likely pause at max_duration before proving not worse"
        if basis == "max_duration"
        else "it will likely not prove not worse by then (without a max_duration "
        "it waits on)"
    )
    return (
        f"phase {phase.name}: by its {_minutes(seconds)} it detects only "
        f"{_effect(metric, mde)} {label}, over {MARGINS_WORTH_CATCHING:g}x the margin "
        f"{_effect(metric, margin)}: {outcome} (lengthen it, or widen the margin)"
    )


def _summary(
    phase: Any,
    entries: list[dict],
    treated: int,
    profile: dict,
    seconds: float,
    basis: str,
) -> str:
    """Return e.g. "10%: ~10 merchants, ~30 events/min each, 15 min
    (max_duration): detects +0.9 pp errors, +12% p95 at 80% power"."""
    rate = profile["events_per_merchant_per_minute"]
    head = (
        f"{phase.name}: ~{treated} merchant{'s' if treated != 1 else ''}, "
        f"~{rate:.3g} events/min each"
        if treated
        else f"{phase.name}: no treated merchant with look-back traffic"
    )

    def label(entry: dict) -> str:
        return _LABELS[entry["metric"]] + (" (dry run)" if entry["dry_run"] else "")

    measured = [e for e in entries if e["mde"] is not None]
    blind = [e for e in entries if e["mde"] is None]
    parts = []
    if measured:
        parts.append(
            "detects "
            + ", ".join(
                f"{_effect(e['metric'], e['mde'])} {label(e)}" for e in measured
            )
            + f" at {POWER:.0%} power"
        )
    if blind:
        parts.append("cannot measure " + ", ".join(label(e) for e in blind))
    return f"{head}, {_minutes(seconds)} ({basis}): " + "; ".join(parts)


def rollout_detectable(
    rollout: Rollout, *, now: dt.datetime, keep_capture: bool = False
) -> dict:
    """Return per phase what each compare check can detect (see module):
    ``{"baseline": {source, since, until, seconds, merchants, events,
    events_per_merchant_per_minute, error_rate, baseline_rate, heavy_share,
    heavy_factor, log_sigma}, "phases": [{phase, name, gate, seconds,
    duration_basis, treated_merchants, control_merchants,
    events_per_merchant_per_minute, checks: [{check, metric, margin, alpha,
    dry_run, mde, why}], summary}], "warnings": [...]}``."""
    checks = [
        (check, COMPARE_METRICS[check.spec.get("metric")])
        for check in rollout.checks.order_by("id")
        if check.mode == CheckMode.COMPARE
        and isinstance(check.spec, dict)
        and check.spec.get("metric") in COMPARE_METRICS
    ]
    result: dict[str, Any] = {"baseline": None, "phases": [], "warnings": []}
    if not checks:
        return result
    captured = rollout.merchant_baseline or {}
    if captured.get("merchants") is not None:
        traffic, source = captured, "merchant_baseline"
    else:
        # What rollout_start would capture now: one computation for both.
        traffic = merchant_baseline_capture(
            environment_key=rollout.environment.key,
            flag_key=rollout.flag.key,
            control_variation=rollout.control_variation,
            now=now,
        )
        source = "lookback"
        if keep_capture:
            # Handed to rollout_start by a checked start (the preflight
            # pops it): the baselines are captured once.
            result["capture"] = traffic
    baseline_seconds = float(traffic.get("seconds") or 0) or float(
        setting("CANARY_BASELINE_SECONDS")
    )
    merchants = traffic.get("merchants") or {}
    fleet = traffic_profile(merchants, baseline_seconds)
    result["baseline"] = {
        "source": source,
        "since": traffic.get("since"),
        "until": traffic.get("until"),
        **fleet,
    }
    if not fleet["merchants"]:
        result["warnings"].append(
            f"no outcome events of flag {rollout.flag.key!r} in "
            f"{rollout.environment.key!r} in the last {_minutes(baseline_seconds)}: "
            "compare checks have no baselines (they will say not yet), and prove "
            "phases pause at max_duration"
        )
        return result
    for phase in rollout.phases.order_by("index"):
        if phase.gate == "guard" or phase.max_duration is None:
            seconds, basis = float(phase.min_duration), "min_duration"
        else:
            seconds, basis = float(phase.max_duration), "max_duration"
        treated, control, profile, no_traffic = _phase_cohorts(phase, merchants, fleet)
        entries = []
        for check, metric in checks:
            mde, why = _check_mde(
                check,
                metric,
                profile,
                treated,
                control,
                seconds,
                baseline_seconds,
                no_traffic,
            )
            entry = {
                "check": check.name,
                "metric": metric,
                "margin": check.margin
                if check.margin is not None
                else sequential.DEFAULT_MARGINS[metric],
                "alpha": check.alpha,
                "dry_run": check.dry_run,
                "mde": mde,
                "why": why,
            }
            entries.append(entry)
            warning = None if check.dry_run else _warning(phase, entry, seconds, basis)
            if warning:
                result["warnings"].append(warning)
        summary = _summary(phase, entries, treated, profile, seconds, basis)
        rate = profile["events_per_merchant_per_minute"]
        result["phases"].append(
            {
                "phase": phase.index,
                "name": phase.name,
                "gate": phase.gate,
                "seconds": seconds,
                "duration_basis": basis,
                "treated_merchants": treated,
                "control_merchants": control,
                "events_per_merchant_per_minute": rate,
                "checks": entries,
                "summary": summary,
            }
        )
    return result
