"""One controller tick: claim, measure, record, decide (see the package)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from django.db.models import Min

from canary import clock, metrics
from canary.controller.claim import claim_due
from canary.controller.decide import decide, tick_interval
from canary.controller.measure import measure
from canary.controller.record import record
from canary.models import HealthCheck
from canary.transitions import ACTIVE
from controlplane.exceptions import DomainError

logger = logging.getLogger(__name__)


@dataclass
class TickReport:
    """What one tick did (returned by the tasks, printed by the demo loop)."""

    rollouts: list[int] = field(default_factory=list)
    measured: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    decisions: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "rollouts": self.rollouts,
            "measured": self.measured,
            "verdicts": self.verdicts,
            "decisions": self.decisions,
            "errors": self.errors,
        }


def controller_tick(*, rollout_id: int | None = None) -> TickReport:
    """Run one controller tick over every rollout in progress (or one).

    Claim due checks, measure them with no transaction open, record the
    check runs, then apply at most one transition per rollout. Safe to run
    in several processes at once and to redeliver: see the package
    docstring (``canary.controller``). Errors of one rollout are logged and
    reported, never raised, so one broken rollout cannot stop the others.
    """
    started = time.perf_counter()
    report = TickReport()
    rollout_ids, jobs = claim_due(rollout_id=rollout_id, now=clock.now())
    report.rollouts = rollout_ids
    for result in measure(jobs):
        try:
            verdict = record(result)
        except DomainError as exc:  # e.g. the check was deleted meanwhile
            report.errors.append(f"check {result.job.check_id}: {exc.message}")
            continue
        except Exception as exc:  # its lease expires: measured again later
            logger.exception(
                "controller: recording check %s failed", result.job.check_id
            )
            report.errors.append(
                f"check {result.job.check_id}: {type(exc).__name__}: {exc}"
            )
            continue
        report.measured += 1
        report.verdicts[verdict] = report.verdicts.get(verdict, 0) + 1
    for pk in rollout_ids:
        try:
            decision = decide(pk)
        except DomainError as exc:
            # An operator moved the rollout between the gate and the
            # service: the next tick decides again from the new state.
            report.errors.append(f"rollout {pk}: {exc.message}")
            continue
        except Exception as exc:
            logger.exception("controller: deciding rollout %s failed", pk)
            report.errors.append(f"rollout {pk}: {type(exc).__name__}: {exc}")
            continue
        if decision is not None:
            report.decisions.append(decision)
    if rollout_id is None:
        _schedule_due_checks(rollout_ids)
    metrics.TICK_SECONDS.observe(time.perf_counter() - started)
    return report


def _schedule_due_checks(rollout_ids: list[int]) -> None:
    """Tick a rollout exactly when its next check falls due before the
    next beat, so a check's interval is kept instead of being rounded up to
    the tick. Only full (beat) ticks schedule these, one per rollout, so the
    scheduled ticks never multiply."""
    if not rollout_ids:
        return
    from canary.tasks import rollout_tick_soon

    now = clock.now()
    horizon = now + dt.timedelta(seconds=tick_interval())
    soonest = (
        HealthCheck.objects.filter(
            rollout_id__in=rollout_ids,
            rollout__status__in=list(ACTIVE),
            next_due_at__gt=now,
            next_due_at__lt=horizon,
        )
        .order_by()
        .values("rollout_id")
        .annotate(due=Min("next_due_at"))
    )
    for row in soonest:
        rollout_tick_soon(
            row["rollout_id"], countdown=(row["due"] - now).total_seconds() + 0.02
        )
