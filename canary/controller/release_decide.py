"""A release member's decision: advance together, roll back what is to blame.

``decide`` hands over when a member of a release (``Rollout.release``)
would advance or roll back. Holding that member's locks, this module takes
the other active members' checks and rows with SKIP LOCKED too (any busy:
decide next tick) and reads every member's gate from the locked rows:

* Advance: only when every active member's gate says advance, in the same
  phase; then all advance in this one transaction (lockstep). Until then
  the ready ones hold.
* Roll back: ``canary.attribution.attribute`` says which members the
  *worse* answers blame -- the ones that said worse (partial), or every
  member (whole: a pilot or 100% phase, an interaction, or all worse) --
  and ``release_roll_back`` rolls each back through its own rollback run.
"""

from __future__ import annotations

from django.db import transaction

from canary import attribution, clock, metrics
from canary.controller.explain import (
    evidence_summary,
    explain,
    explain_checks,
    rollback_cause,
)
from canary.health import GateAction, GateDecision
from canary.models import CheckRun, HealthCheck, Phase, Rollout, TargetType
from canary.services import rollout_advance, rollout_gate
from canary.services.release_sync import release_roll_back
from canary.transitions import ACTIVE
from controlplane.audit.actors import CONTROLLER


def _lock_siblings(rollout: Rollout) -> list[Rollout] | None:
    """Lock the other active members (checks, then rows), or None if busy."""
    ids = list(
        Rollout.objects.filter(release_id=rollout.release_id, status__in=ACTIVE)
        .exclude(pk=rollout.pk)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not ids:
        return []
    checks = list(
        HealthCheck.objects.filter(rollout_id__in=ids).values_list("pk", flat=True)
    )
    locked = list(
        HealthCheck.objects.select_for_update(skip_locked=True)
        .filter(pk__in=checks)
        .values_list("pk", flat=True)
    )
    if len(locked) != len(checks):
        return None
    rows = list(
        Rollout.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk__in=ids)
        .select_related("flag")
        .order_by("pk")
    )
    if len(rows) != len(ids):
        return None
    return rows


def release_decide(rollout: Rollout, decision: GateDecision) -> dict | None:
    """Decide for the release of ``rollout`` (locked by ``decide``)."""
    siblings = _lock_siblings(rollout)
    if siblings is None:
        return None  # a sibling is busy: decide next tick
    now = clock.now()
    members = sorted([rollout, *siblings], key=lambda m: m.pk)
    gates = {
        m.pk: decision if m.pk == rollout.pk else rollout_gate(rollout=m, now=now)
        for m in members
    }
    if decision.action == GateAction.FAIL:
        return _roll_back(rollout, members, gates)
    return _advance(rollout, members, gates)


def _advance(
    rollout: Rollout, members: list[Rollout], gates: dict[int, GateDecision]
) -> dict | None:
    phase = rollout.current_phase
    waiting = [
        m.flag.key
        for m in members
        if m.current_phase != phase
        or m.status != "running"
        or gates[m.pk].action != GateAction.ADVANCE
    ]
    if waiting:
        return None  # lockstep: the ready members hold for the others
    reason = "; ".join(gates[rollout.pk].reasons) + (
        f" for every feature of release {rollout.release_id}"
    )
    statuses = []
    for member in members:
        after = rollout_advance(
            rollout_id=member.pk,
            expected_phase=phase,
            actor=CONTROLLER,
            reason=reason,
            details={
                "decision": "advance",
                "release": member.release_id,
                "checks": evidence_summary(member),
            },
        )
        statuses.append(after.status)
    if any(status != "completed" for status in statuses):
        from canary.controller.decide import _after_commit_tick

        for member in members:
            _after_commit_tick(member.pk)
    return {
        "rollout": rollout.pk,
        "release": rollout.release_id,
        "action": "advance",
        "from_phase": phase,
        "members": [m.pk for m in members],
        "reason": reason,
    }


def _factorial(rollout: Rollout) -> tuple[bool, str]:
    """Return whether the current phase can tell members apart, and its name."""
    phase = Phase.objects.filter(rollout=rollout, index=rollout.current_phase).first()
    if phase is None:
        return False, "this phase"
    text = f"phase {phase.index + 1} ({phase.name})"
    is_split = (
        phase.target_type == TargetType.PERCENTAGE
        and phase.percentage is not None
        and 0 < phase.percentage < 100
    )
    return is_split, text


def _interactions(member: Rollout, checks: tuple[str, ...]) -> dict[str, dict]:
    """Return the failing checks' last interaction answers, per other flag
    (an answer that is significant in any failing check wins)."""
    out: dict[str, dict] = {}
    for name in checks:
        run = (
            CheckRun.objects.filter(
                rollout=member,
                health_check__name=name,
                phase_index=member.current_phase,
            )
            .order_by("-measured_at", "-id")
            .first()
        )
        if run is None:
            continue
        for other, answer in ((run.detail or {}).get("interactions") or {}).items():
            if other not in out or answer.get("significant"):
                out[other] = {**answer, "check": name}
    return out


def _roll_back(
    rollout: Rollout, members: list[Rollout], gates: dict[int, GateDecision]
) -> dict | None:
    on_failure = gates[rollout.pk].on_failure or "rollback_1"
    worse = {
        m.flag.key: tuple(gates[m.pk].checks)
        for m in members
        if gates[m.pk].action == GateAction.FAIL
        and (gates[m.pk].on_failure or "rollback_1") != "pause"
    }
    factorial, phase_text = _factorial(rollout)
    by_key = {m.flag.key: m for m in members}
    answer = attribution.attribute(
        active=[m.flag.key for m in members],
        worse=worse,
        factorial=factorial,
        phase_text=phase_text,
        interactions={key: _interactions(by_key[key], worse[key]) for key in worse},
    )
    reasons: dict[str, str] = {}
    counted: list[tuple[str, float | None]] = []
    for key in answer.flags:
        member = by_key[key]
        gate = gates[member.pk]
        if key in worse:
            explained = explain_checks(member, gate.checks)
            counted.append(rollback_cause(explained, on_failure))
            reasons[key] = (
                f"automatic rollback level {on_failure.rsplit('_', 1)[1]} "
                f"({answer.scope} release rollback): {explain(gate, explained)}"
            )
        else:
            counted.append(("release", None))
            reasons[key] = (
                f"release {rollout.release_id} rolled back as a whole: {answer.reason}"
            )
    release_roll_back(
        release_id=rollout.release_id,
        actor=CONTROLLER,
        flags=answer.flags,
        on_failure=on_failure,
        attribution=answer.as_dict(),
        reasons=reasons,
    )
    from canary.controller.decide import _after_commit_tick

    for cause, seconds in counted:
        transaction.on_commit(
            lambda c=cause, s=seconds: metrics.automatic_rollback_counted(c, s)
        )
    for key in answer.flags:
        _after_commit_tick(by_key[key].pk)
    return {
        "rollout": rollout.pk,
        "release": rollout.release_id,
        "action": f"fail:{on_failure}",
        "scope": answer.scope,
        "flags": list(answer.flags),
        "reason": answer.reason,
    }
