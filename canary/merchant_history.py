"""Selector: one merchant's recent outcome events for one flag.

``merchant_outcome_history`` is what an operator looks at before enabling a
flag for a merchant (``manage.py flag override add`` prints it): how many
outcome events the merchant reported for the flag in the environment over
the last days, the success rate, and the latest failures with their time.
A read: no write, no audit. Two bounded queries, both answered from the
``outcome_env_flag_merchant`` index on PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Max, Q

from canary import clock
from canary.models import Outcome, OutcomeEvent
from flags.models import Environment

HISTORY_DAYS = 7
FAILURES_SHOWN = 5


@dataclass(frozen=True)
class OutcomeFailure:
    """One failed outcome event."""

    occurred_at: datetime
    variation: str
    name: str
    duration_ms: float | None


@dataclass(frozen=True)
class MerchantOutcomeHistory:
    """A merchant's outcome events of a flag in a window ending at ``until``."""

    flag_key: str
    environment_key: str
    merchant_key: str
    days: int
    until: datetime
    events: int
    failures: int
    last_event_at: datetime | None
    # The latest failures, newest first (at most the limit asked for).
    last_failures: tuple[OutcomeFailure, ...]

    @property
    def successes(self) -> int:
        return self.events - self.failures

    @property
    def success_rate(self) -> float | None:
        """Return the share of successful events; None without events."""
        return self.successes / self.events if self.events else None


def merchant_outcome_history(
    *,
    flag_key: str,
    environment: Environment,
    merchant_key: str,
    days: int = HISTORY_DAYS,
    failures: int = FAILURES_SHOWN,
    now: datetime | None = None,
) -> MerchantOutcomeHistory:
    """Return ``merchant_key``'s outcome events of ``flag_key`` in
    ``environment`` over the last ``days`` days: counts, success rate and
    the ``failures`` latest failures, newest first.

    Two queries: one aggregate, one for the latest failures (bounded by
    ``failures``). Events dated in the future are left out.
    """
    until = now or clock.now()
    recent = OutcomeEvent.objects.filter(
        environment=environment,
        flag_key=flag_key,
        merchant_key=merchant_key,
        occurred_at__gt=until - timedelta(days=days),
        occurred_at__lte=until,
    )
    totals = recent.order_by().aggregate(
        events=Count("outcome"),
        failures=Count("outcome", filter=Q(outcome=Outcome.FAILURE)),
        last_event_at=Max("occurred_at"),
    )
    last_failures: tuple[OutcomeFailure, ...] = ()
    if totals["failures"] and failures > 0:
        last_failures = tuple(
            OutcomeFailure(
                occurred_at=occurred_at,
                variation=variation,
                name=name,
                duration_ms=duration_ms,
            )
            for occurred_at, variation, name, duration_ms in recent.filter(
                outcome=Outcome.FAILURE
            )
            .order_by("-occurred_at", "-id")
            .values_list("occurred_at", "variation", "name", "duration_ms")[:failures]
        )
    return MerchantOutcomeHistory(
        flag_key=flag_key,
        environment_key=environment.key,
        merchant_key=merchant_key,
        days=days,
        until=until,
        events=totals["events"],
        failures=totals["failures"],
        last_event_at=totals["last_event_at"],
        last_failures=last_failures,
    )
