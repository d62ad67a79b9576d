"""Step 1 of a tick, the claim: the checks due now, leased in one transaction.

``claim_due`` locks the rollouts in progress (SKIP LOCKED), picks their due
checks and pushes each one's ``next_due_at`` forward by its timeout plus
``LEASE_GRACE_SECONDS``: that lease stops a second controller from
measuring the same check meanwhile. A ``MeasureJob`` carries everything
the measurement needs, so no ORM row crosses into the measuring step.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q

from canary.models import (
    CheckMode,
    CheckRun,
    HealthCheck,
    Phase,
    Release,
    Rollout,
    RolloutStatus,
    TargetType,
)
from canary.providers import MeasureContext
from canary.transitions import ACTIVE

Status = RolloutStatus

# Added to a check's timeout for its claim lease.
LEASE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class MeasureJob:
    """A claimed measurement: everything needed to measure with no ORM row."""

    check_id: int
    check_name: str
    rollout_id: int
    phase_index: int
    provider: str
    spec: dict
    timeout: float
    context: MeasureContext
    # Merged into the check run's detail (a verification window's marker).
    detail: dict = field(default_factory=dict)


def claim_due(
    *, rollout_id: int | None, now: dt.datetime
) -> tuple[list[int], list[MeasureJob]]:
    """Return the rollouts to decide on and the checks this tick measures.

    Rolled-back rollouts with an open verification window are claimed too:
    their compare checks are measured by ``canary.controller.verify``.
    """
    from canary.controller.verify import verification_filter, verification_jobs

    with transaction.atomic():
        # NO KEY UPDATE: a CheckRun being inserted (a key share on its
        # rollout) does not make the rollout skip this tick.
        rollouts_qs = Rollout.objects.select_for_update(
            skip_locked=True, no_key=True
        ).filter(Q(status__in=[*ACTIVE, Status.ROLLING_BACK]) | verification_filter())
        if rollout_id is not None:
            rollouts_qs = rollouts_qs.filter(pk=rollout_id)
        rollouts = {r.pk: r for r in rollouts_qs.order_by("pk")}
        verifying = verification_jobs(
            [r for r in rollouts.values() if r.status == Status.ROLLED_BACK], now
        )
        active = [r for r in rollouts.values() if r.status in ACTIVE]
        if not active:
            return list(rollouts), verifying
        due = list(
            HealthCheck.objects.select_for_update(skip_locked=True)
            .filter(rollout_id__in=[r.pk for r in active])
            .filter(Q(next_due_at__isnull=True) | Q(next_due_at__lte=now))
            .order_by("rollout_id", "id")
        )
        flag_keys = dict(
            Rollout.objects.filter(pk__in=[r.pk for r in active]).values_list(
                "pk", "flag__key"
            )
        )
        env_keys = dict(
            Rollout.objects.filter(pk__in=[r.pk for r in active]).values_list(
                "pk", "environment__key"
            )
        )
        jobs: list[MeasureJob] = []
        previous = _previous_ranges(active, due)
        siblings = _release_context(active, due)
        for check in due:
            rollout = rollouts[check.rollout_id]
            lease = now + dt.timedelta(seconds=check.timeout + LEASE_GRACE_SECONDS)
            # A lease, not a schedule: check_run_record sets the real next
            # due time when the measurement is recorded.
            HealthCheck.objects.filter(pk=check.pk).update(next_due_at=lease)
            jobs.append(
                MeasureJob(
                    check_id=check.pk,
                    check_name=check.name,
                    rollout_id=rollout.pk,
                    phase_index=rollout.current_phase,
                    provider=check.provider,
                    spec=dict(check.spec or {}),
                    timeout=float(check.timeout),
                    context=MeasureContext(
                        flag_key=flag_keys[rollout.pk],
                        environment_key=env_keys[rollout.pk],
                        treatment_variation=rollout.treatment_variation,
                        since=rollout.phase_started_at or rollout.started_at or now,
                        **_compare_context(check, rollout, previous, siblings),
                    ),
                )
            )
    return list(rollouts), jobs + verifying


def _previous_ranges(
    rollouts: list[Rollout], due: list[HealthCheck]
) -> dict[int, tuple[dt.datetime, dt.datetime] | None]:
    """Return, per rollout in a 100% phase with compare checks due, the
    previous phase's range (its first check run to this phase's start):
    its control windows stand in for the control this phase no longer has.
    """
    wanted = {c.rollout_id for c in due if c.mode == CheckMode.COMPARE}
    ranges: dict[int, tuple[dt.datetime, dt.datetime] | None] = {}
    for rollout in rollouts:
        if rollout.pk not in wanted or rollout.current_phase == 0:
            continue
        full = Phase.objects.filter(
            rollout=rollout, index=rollout.current_phase, percentage__gte=100
        ).exists()
        if not full or rollout.phase_started_at is None:
            continue
        first = (
            CheckRun.objects.filter(
                rollout=rollout, phase_index=rollout.current_phase - 1
            )
            .order_by("measured_at")
            .values_list("measured_at", flat=True)
            .first()
        )
        ranges[rollout.pk] = (first, rollout.phase_started_at) if first else None
    return ranges


def _release_context(
    rollouts: list[Rollout], due: list[HealthCheck]
) -> dict[int, dict]:
    """Return, per release member with compare checks due, the context
    fields of a release: ``siblings``, the other active members' ``(flag
    key, treatment)`` (the measurement can say who was served each one's
    treatment, ``canary.attribution.interaction``), and in a split phase
    ``exclude_merchants``, the release's pilot merchants: they hold every
    member's treatment by override, not by bucketing, so they sit in one
    cell of the factorial design and would blame every member for the
    harm of one; and ``exclude_treated``, the ``(flag key, treatment)`` of
    the members rolled back in this phase: the merchants served one's
    treatment carried its harm in both of a continuing member's arms, so
    they are left out for the rest of the phase (instead of starting the
    continuing members' evidence again)."""
    wanted = {c.rollout_id for c in due if c.mode == CheckMode.COMPARE}
    releases = {
        r.release_id for r in rollouts if r.pk in wanted and r.release_id is not None
    }
    if not releases:
        return {}
    everyone = list(
        Rollout.objects.filter(release_id__in=releases)
        .order_by("pk")
        .values_list("pk", "release_id", "flag__key", "treatment_variation", "status")
    )
    members = [row[:4] for row in everyone if row[4] in ACTIVE]
    treatments = {(row[1], row[2]): row[3] for row in everyone}
    rolled_back: dict[int, list[dict]] = {
        pk: list((summary or {}).get("rolled_back") or [])
        for pk, summary in Release.objects.filter(pk__in=releases).values_list(
            "pk", "summary"
        )
    }
    phases = {
        (p.rollout_id, p.index): p
        for p in Phase.objects.filter(rollout_id__in=[r.pk for r in rollouts])
    }
    out: dict[int, dict] = {}
    for rollout in rollouts:
        if rollout.pk not in wanted or rollout.release_id is None:
            continue
        extra: dict = {
            "siblings": tuple(
                (key, treatment)
                for pk, release, key, treatment in members
                if release == rollout.release_id and pk != rollout.pk
            )
        }
        current = phases.get((rollout.pk, rollout.current_phase))
        if (
            current is not None
            and current.target_type == TargetType.PERCENTAGE
            and 0 < (current.percentage or 0) < 100
        ):
            pilots: list[str] = []
            for (pk, _), phase in sorted(phases.items()):
                if pk == rollout.pk:
                    pilots.extend(k for k in phase.pilot_merchants if k not in pilots)
            extra["exclude_merchants"] = tuple(pilots)
            extra["exclude_treated"] = tuple(
                (entry["flag"], treatments[rollout.release_id, entry["flag"]])
                for entry in rolled_back.get(rollout.release_id, [])
                if entry.get("phase") == rollout.current_phase
                and (rollout.release_id, entry.get("flag")) in treatments
            )
        out[rollout.pk] = extra
    return out


def _compare_context(
    check: HealthCheck,
    rollout: Rollout,
    previous: dict[int, tuple[dt.datetime, dt.datetime] | None],
    siblings: dict[int, dict] | None = None,
) -> dict:
    """Return the MeasureContext fields a compare check adds."""
    if check.mode != CheckMode.COMPARE:
        return {}
    extra: dict = {"compare": True, "baseline": rollout.merchant_baseline or None}
    extra.update((siblings or {}).get(rollout.pk) or {})
    span = previous.get(rollout.pk)
    if span is not None:
        extra["previous_since"], extra["previous_until"] = span
    return extra
