"""Whether each audit chain verifies, cheaply enough for a page load.

Verifying reads and hashes every event (``audit_chains_verify``), so the
admin does not do it on every visit: the last result is kept in Django's
cache with the time it was computed, and recomputed on demand (the "Verify
now" button) or, when nothing is cached yet and the log is small, on the
first visit. What is cheap is done on every visit: counting each chain's
events and finding its head, so the page says how many events arrived
after the last check.

The cache is Django's default one: per process unless ``CACHES`` names a
shared backend (Redis, database); a process without the result shows "not
checked yet" and its button.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Max
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.audit.verify import audit_chains_verify

CACHE_KEY = "controlplane.audit.chain_status"
# Seconds the last verification is kept; a day-old "OK" with its time is
# still worth showing, and a new check is one click away.
CACHE_SECONDS = 7 * 24 * 3600
# Up to this many events, a visit with nothing cached verifies at once
# (about 0.4 s on a small machine; 5,000 took 2 s).
AUTO_VERIFY_EVENTS = 1000


@dataclass(frozen=True, slots=True)
class ChainStatus:
    """One chain: what the last verification found, and how it stands now.

    ``ok`` is None when the chain was not verified (never, or it did not
    exist at the last check). ``head_id`` is the last event verified,
    ``current_head_id`` the last event now: events after the first were
    appended since and are not covered by the result.
    """

    chain: str
    events: int
    current_head_id: int | None
    ok: bool | None = None
    checked: int = 0
    head_id: int | None = None
    broken_id: int | None = None
    problem: str = ""

    @property
    def unchecked(self) -> int:
        """Return how many events are newer than the last verification."""
        if self.ok is None:
            return self.events
        if self.ok is False:
            return 0  # past a break a chain proves nothing anyway
        return max(0, self.events - self.checked)

    @property
    def state(self) -> str:
        """Return ``ok``, ``broken`` or ``unchecked``."""
        if self.ok is None:
            return "unchecked"
        return "ok" if self.ok else "broken"


@dataclass(frozen=True, slots=True)
class ChainStatusReport:
    """Every chain, and when they were last verified (None: never)."""

    checked_at: dt.datetime | None
    chains: tuple[ChainStatus, ...]

    @property
    def events(self) -> int:
        """Return how many events the log holds."""
        return sum(chain.events for chain in self.chains)

    @property
    def broken(self) -> tuple[ChainStatus, ...]:
        """Return the chains the last verification found broken."""
        return tuple(chain for chain in self.chains if chain.state == "broken")


def _chain_sizes() -> dict[str, tuple[int, int | None]]:
    """Return ``{chain: (events, last id)}``: one aggregate query."""
    rows = (
        AuditEvent.objects.order_by()
        .values("chain")
        .annotate(events=Count("id"), head=Max("id"))
    )
    return {row["chain"]: (row["events"], row["head"]) for row in rows}


def audit_chain_status_verify() -> ChainStatusReport:
    """Verify every chain now, keep the result in the cache and return it."""
    reports = audit_chains_verify()
    checked_at = timezone.now()
    cache.set(
        CACHE_KEY,
        {
            "checked_at": checked_at,
            "chains": {
                report.chain: {
                    "ok": report.ok,
                    "checked": report.checked,
                    "head_id": report.head_id,
                    "broken_id": report.broken_id,
                    "problem": report.problem,
                }
                for report in reports
            },
        },
        CACHE_SECONDS,
    )
    return audit_chain_status()


def audit_chain_status(*, auto_verify_events: int = 0) -> ChainStatusReport:
    """Return the last verification of every chain beside each chain's size now.

    Nothing is verified here, except when nothing is cached and the log has
    at most ``auto_verify_events`` events (0: never): then this verifies
    once, as ``audit_chain_status_verify`` does.
    """
    cached = cache.get(CACHE_KEY)
    sizes = _chain_sizes()
    if cached is None and sizes:
        if sum(events for events, _ in sizes.values()) <= auto_verify_events:
            return audit_chain_status_verify()
    results = (cached or {}).get("chains", {})
    chains = []
    for name in sorted(sizes.keys() | results.keys()):
        events, head = sizes.get(name, (0, None))
        chains.append(
            ChainStatus(
                chain=name, events=events, current_head_id=head, **results.get(name, {})
            )
        )
    return ChainStatusReport(
        checked_at=(cached or {}).get("checked_at"), chains=tuple(chains)
    )


__all__ = [
    "AUTO_VERIFY_EVENTS",
    "ChainStatus",
    "ChainStatusReport",
    "audit_chain_status",
    "audit_chain_status_verify",
]
