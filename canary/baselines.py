"""Per-merchant outcome windows: the baselines captured at start and the
current windows compare checks measure.

A *window* is one merchant's outcome events of one flag in one environment
over a time range: ``{"events", "failures", "p50_ms", "p95_ms", "p99_ms"}``
(quantiles of ``duration_ms``; None without timed events), the shape
``canary.sequential.Window`` takes.

``merchant_windows`` groups a range's events by merchant and cohort, in SQL
on PostgreSQL (``percentile_cont``) and in Python elsewhere; every query is
bounded by a statement timeout. ``merchant_baseline_capture`` runs it over
the look-back before a rollout starts (setting CANARY_BASELINE_SECONDS,
control-variation events only: what each merchant saw without the
treatment) and returns what ``Rollout.merchant_baseline`` keeps.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from django.db import connection
from django.db.models import Case, CharField, Count, FloatField, Q, Value, When

from canary.models import Outcome, OutcomeEvent
from canary.providers.outcomes import PercentileCont, percentile, statement_timeout
from controlplane.conf import setting

TREATMENT, CONTROL = "treatment", "control"
QUANTILE_FIELDS = {"p50_ms": 0.5, "p95_ms": 0.95, "p99_ms": 0.99}


def _events(
    *,
    environment_key: str,
    flag_key: str,
    since: dt.datetime,
    until: dt.datetime | None,
    name: str | None = None,
    variations: Iterable[str] | None = None,
):
    events = OutcomeEvent.objects.filter(
        environment__key=environment_key, flag_key=flag_key, occurred_at__gte=since
    )
    if until is not None:
        events = events.filter(occurred_at__lt=until)
    if name:
        events = events.filter(name=name)
    if variations is not None:
        events = events.filter(variation__in=list(variations))
    return events


def _cohort_expression(
    treatment_variation: str | None, treated_merchants: Iterable[str] | None
):
    if treated_merchants is not None:
        keys = list(treated_merchants)
        if not keys:
            return Value(CONTROL)
        return Case(
            When(merchant_key__in=keys, then=Value(TREATMENT)),
            default=Value(CONTROL),
            output_field=CharField(),
        )
    if treatment_variation is None:
        return Value(CONTROL)
    return Case(
        When(variation=treatment_variation, then=Value(TREATMENT)),
        default=Value(CONTROL),
        output_field=CharField(),
    )


def merchant_windows(
    *,
    environment_key: str,
    flag_key: str,
    since: dt.datetime,
    until: dt.datetime | None = None,
    name: str | None = None,
    treatment_variation: str | None = None,
    treated_merchants: Iterable[str] | None = None,
    variations: Iterable[str] | None = None,
    above: tuple[str, Mapping[str, float]] | None = None,
    timeout: float = 10.0,
    quantiles: Iterable[str] | None = None,
) -> dict[str, dict[str, dict]]:
    """Return ``{"treatment": {merchant: window}, "control": {...}}``.

    ``quantiles`` names the quantile fields to compute (default all of
    ``QUANTILE_FIELDS``); the others are None. An error-rate comparison
    needs none: counting is a hash aggregate, a quantile sorts every
    merchant's durations.

    ``above`` is ``(quantile field, {merchant: threshold})``, the merchants'
    baseline quantiles: each window then also counts its events slower than
    its merchant's threshold (``p95_above`` for ``p95_ms``;
    ``canary.exceedance``), None for a merchant without one.

    A merchant's events are treatment when their variation is
    ``treatment_variation`` or, when ``treated_merchants`` is given, when
    the merchant is one of them (after a rollback everyone is served
    control again, yet the formerly treated merchants are the ones to
    watch); everything else is control. Neither given: all control.
    """
    events = _events(
        environment_key=environment_key,
        flag_key=flag_key,
        since=since,
        until=until,
        name=name,
        variations=variations,
    ).annotate(cohort=_cohort_expression(treatment_variation, treated_merchants))
    result: dict[str, dict[str, dict]] = {TREATMENT: {}, CONTROL: {}}
    wanted = {
        field: q
        for field, q in QUANTILE_FIELDS.items()
        if quantiles is None or field in set(quantiles)
    }
    count_field, thresholds = _thresholds(above)
    if connection.vendor == "postgresql":
        counts = {}
        if thresholds:
            counts["above"] = Count(
                "id", filter=Q(duration_ms__gt=_threshold_expression(thresholds))
            )
        with statement_timeout(timeout):
            rows = list(
                events.order_by()
                .values("merchant_key", "cohort")
                .annotate(
                    events=Count("id"),
                    failures=Count("id", filter=Q(outcome=Outcome.FAILURE)),
                    **counts,
                    **{
                        field: PercentileCont("duration_ms", q)
                        for field, q in wanted.items()
                    },
                )
            )
        for row in rows:
            window = result[row["cohort"]][row["merchant_key"]] = {
                "events": row["events"],
                "failures": row["failures"],
                **{
                    field: (float(row[field]) if row.get(field) is not None else None)
                    for field in QUANTILE_FIELDS
                },
            }
            if count_field:
                has = row["merchant_key"] in thresholds
                window[count_field] = row["above"] if has else None
        return result
    durations: dict[tuple[str, str], list[float]] = {}
    for key, cohort, outcome, duration in (
        events.order_by()
        .values_list("merchant_key", "cohort", "outcome", "duration_ms")
        .iterator(chunk_size=5000)
    ):
        window = result[cohort].setdefault(key, {"events": 0, "failures": 0})
        window["events"] += 1
        if outcome == Outcome.FAILURE:
            window["failures"] += 1
        if duration is not None and (wanted or count_field):
            durations.setdefault((cohort, key), []).append(float(duration))
    for cohort, windows in result.items():
        for key, window in windows.items():
            values = sorted(durations.get((cohort, key), []))
            for field, q in QUANTILE_FIELDS.items():
                window[field] = percentile(values, q) if field in wanted else None
            if count_field:
                threshold = thresholds.get(key)
                window[count_field] = (
                    None
                    if threshold is None
                    else len(values) - bisect.bisect_right(values, threshold)
                )
    return result


def treated_by_flag(
    *,
    environment_key: str,
    flags: Iterable[tuple[str, str]],
    since: dt.datetime,
    until: dt.datetime | None = None,
    timeout: float = 10.0,
) -> dict[str, list[str]]:
    """Return, per ``(flag key, treatment)``, the merchants whose events in
    the range were served that treatment (sorted keys)."""
    out: dict[str, list[str]] = {}
    with statement_timeout(timeout) if connection.vendor == "postgresql" else _null():
        for flag_key, treatment in flags:
            keys = (
                _events(
                    environment_key=environment_key,
                    flag_key=flag_key,
                    since=since,
                    until=until,
                    variations=[treatment],
                )
                .order_by("merchant_key")
                .values_list("merchant_key", flat=True)
                .distinct()
            )
            out[flag_key] = list(keys)
    return out


@contextlib.contextmanager
def _null() -> Iterator[None]:
    yield


def _thresholds(
    above: tuple[str, Mapping[str, float]] | None,
) -> tuple[str | None, dict[str, float]]:
    """Return the count's window field and the usable thresholds."""
    if above is None:
        return None, {}
    field, given = above
    if field not in QUANTILE_FIELDS:
        raise ValueError(f"unknown quantile field {field!r}")
    thresholds = {
        str(key): float(value)
        for key, value in given.items()
        if isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    }
    return field.removesuffix("_ms") + "_above", thresholds


def _threshold_expression(thresholds: Mapping[str, float]):
    """Return ``CASE merchant_key WHEN ... THEN threshold END`` (NULL for a
    merchant without one: none of its events count)."""
    return Case(
        *(
            When(merchant_key=key, then=Value(value))
            for key, value in sorted(thresholds.items())
        ),
        default=Value(None),
        output_field=FloatField(),
    )


def baseline_thresholds(
    baseline: Mapping[str, Any] | None, field: str
) -> dict[str, float]:
    """Return ``{merchant: baseline quantile}`` of ``Rollout.merchant_baseline``
    for ``field`` (``p95_ms``...), merchants without one left out."""
    merchants = (baseline or {}).get("merchants") or {}
    return {
        key: window[field]
        for key, window in merchants.items()
        if isinstance(window, Mapping) and window.get(field)
    }


def merchant_baseline_capture(
    *,
    environment_key: str,
    flag_key: str,
    control_variation: str,
    now: dt.datetime,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Return each merchant's control-variation window over the look-back
    before ``now``: what ``Rollout.merchant_baseline`` keeps.

    ``seconds`` defaults to the CANARY_BASELINE_SECONDS setting. Bounded by
    CANARY_BASELINE_TIMEOUT seconds; a merchant without events in the
    look-back has no baseline, and compare checks leave it out.
    """
    seconds = float(setting("CANARY_BASELINE_SECONDS") if seconds is None else seconds)
    since = now - dt.timedelta(seconds=seconds)
    windows = merchant_windows(
        environment_key=environment_key,
        flag_key=flag_key,
        since=since,
        until=now,
        variations=[control_variation] if control_variation else None,
        timeout=float(setting("CANARY_BASELINE_TIMEOUT")),
    )
    merchants = windows[CONTROL]
    return {
        "since": since.isoformat(),
        "until": now.isoformat(),
        "seconds": seconds,
        "variation": control_variation,
        "merchants": merchants,
        "events": sum(w["events"] for w in merchants.values()),
    }
