"""``outcomes``: error rate and duration percentiles of reported outcome events.

Spec: ``{"metric": "error_rate" | "p50_ms" | "p95_ms" | "p99_ms", "name"?: event name,
"window"?: seconds}``. Counts events of ``ctx.flag_key`` in
``ctx.environment_key`` since ``ctx.since`` (or the last ``window`` seconds
when that is later), until ``ctx.until``. The treatment cohort is the events
whose variation is ``ctx.treatment_variation``; every other variation is
control. The value is the treatment cohort's metric; ``samples`` its size.

Percentiles are linear-interpolated (``percentile_cont``): computed in SQL on
PostgreSQL, in Python elsewhere. ``durations`` in each cohort are exact up to
``MAX_DURATIONS`` values and an even quantile sketch of that size beyond, so
a rank test (Mann-Whitney U) gets a faithful sample at bounded cost.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Aggregate, Case, Count, FloatField, Q, Value, When
from django.db.models import CharField as CharFieldType

from canary import clock
from canary.providers.base import (
    MeasureContext,
    Measurement,
    ProviderError,
    optional_number,
    reject_unknown,
    require_mapping,
)
from controlplane.exceptions import InvalidInput

METRICS = ("error_rate", "p50_ms", "p95_ms", "p99_ms")
COHORTS = ("treatment", "control")
MAX_DURATIONS = 2000


class PercentileCont(Aggregate):
    """PostgreSQL ``percentile_cont(f) WITHIN GROUP (ORDER BY expr)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: str, fraction: float, **extra: Any) -> None:
        super().__init__(expression, fraction=repr(float(fraction)), **extra)


class PercentileDiscArray(Aggregate):
    """PostgreSQL ``percentile_disc(ARRAY[...]) WITHIN GROUP (ORDER BY expr)``."""

    function = "PERCENTILE_DISC"
    template = "%(function)s(ARRAY[%(fractions)s]::float8[]) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(
        self, expression: str, fractions: Sequence[float], **extra: Any
    ) -> None:
        super().__init__(
            expression, fractions=", ".join(repr(float(f)) for f in fractions), **extra
        )

    def convert_value(self, value, expression, connection):  # noqa: D102
        return value

    def get_db_converters(self, connection):  # noqa: D102
        return []


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Return the linear-interpolated percentile (same as ``percentile_cont``)."""
    if not sorted_values:
        return None
    position = fraction * (len(sorted_values) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(sorted_values[low])
    weight = position - low
    return float(
        sorted_values[low] + (sorted_values[high] - sorted_values[low]) * weight
    )


def sketch_fractions(size: int) -> list[float]:
    """Return ``size`` evenly spaced fractions in [0, 1]."""
    if size <= 1:
        return [0.5]
    return [index / (size - 1) for index in range(size)]


def quantile_sketch(sorted_values: Sequence[float], size: int) -> list[float]:
    """Return all values if there are at most ``size``, else ``size``
    evenly spaced order statistics (``percentile_disc``)."""
    if len(sorted_values) <= size:
        return [float(v) for v in sorted_values]
    n = len(sorted_values)
    return [
        float(sorted_values[max(0, math.ceil(f * n) - 1)])
        for f in sketch_fractions(size)
    ]


def _empty_cohort() -> dict:
    return {
        "n": 0,
        "failures": 0,
        "error_rate": None,
        "p50": None,
        "p95": None,
        "p99": None,
        "durations": [],
    }


class OutcomesProvider:
    name = "outcomes"

    def validate_spec(self, spec: dict) -> dict:
        """Return ``{"metric", "name"?, "window"?}`` or raise ``InvalidInput``."""
        spec = require_mapping(spec)
        reject_unknown(spec, {"metric", "name", "window"})
        metric = spec.get("metric")
        if metric not in METRICS:
            raise InvalidInput(
                f"must be one of {', '.join(METRICS)}", field="spec.metric"
            )
        clean: dict = {"metric": metric}
        name = spec.get("name")
        if name is not None:
            if not isinstance(name, str) or not name.strip() or len(name) > 100:
                raise InvalidInput(
                    "must be a non-empty string of at most 100 characters",
                    field="spec.name",
                )
            clean["name"] = name.strip()
        window = optional_number(spec, "window", minimum=1, integer=True)
        if window is not None:
            clean["window"] = window
        return clean

    def measure(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Return the treatment cohort's metric with both cohorts filled in
        (compare mode: per-merchant windows instead, see ``_merchants``)."""
        from canary.models import OutcomeEvent

        spec = self.validate_spec(spec)
        if ctx.compare:
            return self._merchants(spec, ctx, timeout=timeout)
        since = _since(spec, ctx)
        events = OutcomeEvent.objects.filter(
            environment__key=ctx.environment_key,
            flag_key=ctx.flag_key,
            occurred_at__gte=since,
        )
        if ctx.until is not None:
            events = events.filter(occurred_at__lt=ctx.until)
        if spec.get("name"):
            events = events.filter(name=spec["name"])
        cohort = Case(
            When(variation=ctx.treatment_variation, then=Value("treatment")),
            default=Value("control"),
            output_field=CharFieldType(),
        )
        detail: dict = {
            **_range_detail(spec, ctx, since),
            "unit": "ratio" if spec["metric"] == "error_rate" else "ms",
        }
        try:
            if connection.vendor == "postgresql":
                with statement_timeout(timeout):
                    cohorts = self._cohorts_postgresql(events, cohort)
            else:
                cohorts = self._cohorts_python(events, cohort)
        except ProviderError:
            raise
        except Exception as error:  # a database error while measuring
            raise ProviderError(
                f"outcome query failed: {error}", detail=detail
            ) from error
        treatment = cohorts["treatment"]
        value = {
            "error_rate": treatment["error_rate"],
            "p50_ms": treatment["p50"],
            "p95_ms": treatment["p95"],
            "p99_ms": treatment.get("p99"),
        }[spec["metric"]]
        detail["treatment"] = {k: v for k, v in treatment.items() if k != "durations"}
        detail["control"] = {
            k: v for k, v in cohorts["control"].items() if k != "durations"
        }
        detail["value"] = value
        return Measurement(
            value=value, samples=treatment["n"], detail=detail, cohorts=cohorts
        )

    def _merchants(
        self, spec: dict, ctx: MeasureContext, *, timeout: float
    ) -> Measurement:
        """Return per-merchant windows of the current range (compare mode).

        The value is the treated cohort's pooled metric (error rate; for a
        quantile, the event-weighted mean of the merchants' quantiles), for
        display only: the comparison decides. With a previous range in
        ``ctx`` (a 100% phase), the control's windows of that range come
        along as ``previous_control`` and stand in for the live control.
        """
        from canary.baselines import (
            CONTROL,
            QUANTILE_FIELDS,
            TREATMENT,
            baseline_thresholds,
            merchant_windows,
            treated_by_flag,
        )

        since = _since(spec, ctx)
        detail: dict = {**_range_detail(spec, ctx, since), "per_merchant": True}
        metric = spec["metric"]
        query = {
            "environment_key": ctx.environment_key,
            "flag_key": ctx.flag_key,
            "name": spec.get("name"),
            "timeout": timeout,
            # a quantile's variance needs the window's spread (p50 and p95)
            "quantiles": ()
            if metric == "error_rate"
            else tuple(dict.fromkeys(("p50_ms", "p95_ms", metric))),
        }
        if spec["metric"] in QUANTILE_FIELDS and ctx.baseline:
            thresholds = baseline_thresholds(ctx.baseline, spec["metric"])
            query["above"] = (spec["metric"], thresholds)
        try:
            windows = merchant_windows(
                since=since,
                until=ctx.until,
                treatment_variation=ctx.treatment_variation,
                treated_merchants=ctx.treated_merchants,
                **query,
            )
            # A 100% phase (the only one with a previous range) has no live
            # control: the few control events in its range were served
            # before the move reached every server, so the previous phase's
            # control stands in, whether or not such stragglers exist.
            if ctx.previous_since is not None:
                previous = merchant_windows(
                    since=ctx.previous_since,
                    until=ctx.previous_until,
                    treatment_variation=ctx.treatment_variation,
                    **query,
                )
                windows["previous_control"] = previous[CONTROL]
                detail["previous_since"] = ctx.previous_since.isoformat()
                detail["previous_until"] = (
                    ctx.previous_until.isoformat() if ctx.previous_until else None
                )
            left_out = set(ctx.exclude_merchants)
            if ctx.exclude_merchants:
                detail["excluded_merchants"] = sorted(left_out)
            if ctx.exclude_treated:
                served = treated_by_flag(
                    environment_key=ctx.environment_key,
                    flags=ctx.exclude_treated,
                    since=since,
                    until=ctx.until,
                    timeout=timeout,
                )
                # a count, not the keys: a rolled-back feature's bucket is
                # a tenth of the registry at 10%
                detail["excluded_treated"] = {
                    key: len(merchants) for key, merchants in served.items()
                }
                for merchants in served.values():
                    left_out.update(merchants)
            if left_out:
                for cohort in (TREATMENT, CONTROL):
                    windows[cohort] = {
                        k: w for k, w in windows[cohort].items() if k not in left_out
                    }
            if ctx.siblings:
                # Read only when the comparison says worse (the release's
                # attribution is the only reader): a query per sibling at
                # every look would cost more than the comparison itself.
                windows["siblings_loader"] = functools.partial(
                    treated_by_flag,
                    environment_key=ctx.environment_key,
                    flags=ctx.siblings,
                    since=since,
                    until=ctx.until,
                    timeout=timeout,
                )
        except Exception as error:  # a database error while measuring
            raise ProviderError(
                f"outcome query failed: {type(error).__name__}", detail=detail
            ) from error
        treated = windows[TREATMENT]
        events = sum(w["events"] for w in treated.values())
        value: float | None = None
        if events and spec["metric"] == "error_rate":
            value = sum(w["failures"] for w in treated.values()) / events
        elif events:
            timed = [(w[spec["metric"]], w["events"]) for w in treated.values()]
            timed = [(v, n) for v, n in timed if v is not None]
            if timed:
                value = sum(v * n for v, n in timed) / sum(n for _, n in timed)
        detail["treated_merchants"] = len(treated)
        detail["treated_events"] = events
        detail["control_merchants"] = len(windows[CONTROL])
        detail["control_events"] = sum(w["events"] for w in windows[CONTROL].values())
        return Measurement(
            value=value, samples=events, detail=detail, merchants=windows
        )

    def _cohorts_postgresql(self, events, cohort) -> dict[str, dict]:
        from canary.models import Outcome

        cohorts = {name: _empty_cohort() for name in COHORTS}
        rows = (
            events.annotate(cohort=cohort)
            .order_by()
            .values("cohort")
            .annotate(
                n=Count("id"),
                failures=Count("id", filter=Q(outcome=Outcome.FAILURE)),
                timed=Count("duration_ms"),
                p50=PercentileCont("duration_ms", 0.5),
                p95=PercentileCont("duration_ms", 0.95),
                p99=PercentileCont("duration_ms", 0.99),
            )
        )
        for row in rows:
            target = cohorts[row["cohort"]]
            target.update(
                n=row["n"],
                failures=row["failures"],
                p50=row["p50"],
                p95=row["p95"],
                p99=row["p99"],
            )
            target["timed"] = row["timed"]
        for name, target in cohorts.items():
            timed = target.pop("timed", 0)
            if not timed:
                continue
            subset = (
                events.filter(duration_ms__isnull=False)
                .annotate(cohort=cohort)
                .filter(cohort=name)
            )
            if timed <= MAX_DURATIONS:
                target["durations"] = sorted(
                    float(v) for v in subset.values_list("duration_ms", flat=True)
                )
            else:
                sketch = subset.order_by().aggregate(
                    sketch=PercentileDiscArray(
                        "duration_ms", sketch_fractions(MAX_DURATIONS)
                    )
                )["sketch"]
                target["durations"] = [float(v) for v in sketch or []]
        _finish(cohorts)
        return cohorts

    def _cohorts_python(self, events, cohort) -> dict[str, dict]:
        from canary.models import Outcome

        cohorts = {name: _empty_cohort() for name in COHORTS}
        durations: dict[str, list[float]] = {name: [] for name in COHORTS}
        rows = (
            events.annotate(cohort=cohort)
            .order_by()
            .values_list("cohort", "outcome", "duration_ms")
        )
        for name, outcome, duration in rows.iterator(chunk_size=5000):
            target = cohorts[name]
            target["n"] += 1
            if outcome == Outcome.FAILURE:
                target["failures"] += 1
            if duration is not None:
                durations[name].append(float(duration))
        for name, target in cohorts.items():
            values = sorted(durations[name])
            target["p50"] = percentile(values, 0.5)
            target["p95"] = percentile(values, 0.95)
            target["p99"] = percentile(values, 0.99)
            target["durations"] = quantile_sketch(values, MAX_DURATIONS)
        _finish(cohorts)
        return cohorts


def _since(spec: dict, ctx: MeasureContext):
    """Return where the measured range starts: the phase start, or the
    last ``window`` seconds when that is later."""
    if not spec.get("window"):
        return ctx.since
    return max(
        ctx.since, (ctx.until or clock.now()) - timedelta(seconds=spec["window"])
    )


def _range_detail(spec: dict, ctx: MeasureContext, since) -> dict:
    return {
        "flag": ctx.flag_key,
        "environment": ctx.environment_key,
        "treatment_variation": ctx.treatment_variation,
        "since": since.isoformat(),
        "until": ctx.until.isoformat() if ctx.until else None,
        "metric": spec["metric"],
        "name": spec.get("name"),
    }


@contextmanager
def statement_timeout(timeout: float) -> Iterator[None]:
    """Bound every query inside to ``timeout`` (PostgreSQL; a savepoint
    inside an outer transaction, rolled back so nothing leaks)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                f"SET LOCAL statement_timeout = {max(1, int(timeout * 1000))}"
            )
            # Grouping a phase's events by merchant sorts them; the default
            # 4 MB spills an hour of a busy flag to disk.
            cursor.execute("SET LOCAL work_mem = '32MB'")
        try:
            yield
        finally:
            transaction.set_rollback(True)


def _finish(cohorts: dict[str, dict]) -> None:
    for target in cohorts.values():
        target["error_rate"] = target["failures"] / target["n"] if target["n"] else None
