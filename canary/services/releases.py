"""Releases: create, start, move and end several flags together.

A release owns one member rollout per flag (``canary.release_models``).
These services write the release row and its audit events; every member
change goes through the rollout services, so each flag move, check reset
and rollback keeps its own audit event. ``release_sync`` is the only code
that assigns ``Release.status``: ``rollout_transition`` calls it, in the
member's transaction, whenever a member's status changes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from canary import clock
from canary.exceptions import Conflict, InvalidInput, NotFound
from canary.models import (
    Release,
    ReleaseStatus,
)
from canary.services._common import Status
from canary.services.release_sync import (  # noqa: F401 (re-exported)
    _lock_release,
    release_estimates,
    release_members,
    release_roll_back,
    release_sync,
)
from canary.transitions import ACTIVE
from controlplane.audit.services import audited_transaction, record_audit_event
from flags import selectors as flag_selectors
from flags.models import Environment

MAX_MEMBERS = 10


def _members_clean(flags: Any, environment: Environment) -> list[tuple[Any, Any]]:
    """Return ``[(Flag, treatment or None)]`` of a release's member list."""
    if not isinstance(flags, (list, tuple)) or not flags:
        raise InvalidInput("give the release's flags as a list", field="flags")
    if len(flags) < 2:
        raise InvalidInput(
            "a release moves at least two flags (one flag is a rollout)",
            field="flags",
        )
    if len(flags) > MAX_MEMBERS:
        raise InvalidInput(f"at most {MAX_MEMBERS} flags per release", field="flags")
    members: list[tuple[Any, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(flags):
        treatment = None
        if isinstance(item, dict):
            treatment = item.get("treatment")
            item = item.get("flag")
        key = getattr(item, "key", item)
        if not isinstance(key, str) or not key:
            raise InvalidInput("must be a flag key", field=f"flags[{index}]")
        if key in seen:
            raise InvalidInput(f"{key!r} is listed twice", field=f"flags[{index}]")
        seen.add(key)
        try:
            flag = flag_selectors.flag_get(key)
        except NotFound:
            raise NotFound(f"unknown flag {key!r}", field=f"flags[{index}]") from None
        if flag.archived:
            raise Conflict(f"flag {key!r} is archived", field=f"flags[{index}]")
        if treatment is not None and not isinstance(treatment, str):
            raise InvalidInput(
                "must be a variation key", field=f"flags[{index}].treatment"
            )
        members.append((flag, treatment))
    return members


def release_create(
    *,
    actor: Any,
    environment: Environment,
    flags: Sequence[Any],
    template: str = "",
    phases: list[dict] | None = None,
    name: str | None = None,
    pilot_merchants: list[str] | None = None,
    checks: list[dict] | None = None,
    check_template: str | None = None,
    duration_scale: float | None = None,
    phase_overrides: dict[str, dict] | None = None,
    deployment: Any = None,
    max_level: Any = 3,
) -> Release:
    """Create a draft release: one draft member rollout per flag.

    ``flags`` lists flag keys (or Flags, or ``{"flag", "treatment"}``);
    every member gets the same phases (the plan ``template``, or
    ``phases`` as ``rollout_create`` takes them), pilot merchants, checks
    and deployment, each for its own flag. Writes
    ``release.created`` plus each member's ``rollout.created``. Raise
    InvalidInput (fewer than two flags, a flag twice, more than
    ``MAX_MEMBERS``), NotFound for an unknown flag, Conflict for an
    archived one, and whatever ``rollout_create_from_template`` raises,
    with nothing created.
    """
    from canary.services.rollouts import rollout_create
    from canary.services.templates import template_phases

    if bool(template) == (phases is not None):
        raise InvalidInput("give either a plan (template) or phases", field="template")
    members = _members_clean(flags, environment)
    if template:
        phases = template_phases(
            template,
            pilot_merchants=pilot_merchants,
            duration_scale=duration_scale,
            phase_overrides=phase_overrides,
        )
    if checks is None and not check_template:
        check_template = "default"
    name = (name or "").strip() or (
        f"{' + '.join(flag.key for flag, _ in members)} in {environment.key}"
    )
    if len(name) > 200:
        raise InvalidInput("at most 200 characters", field="name")
    with audited_transaction():
        release = Release(
            name=name,
            environment=environment,
            template=template,
            created_by=getattr(actor, "username", "") or str(actor)[:150],
        )
        release.full_clean()
        release.save()
        keys = []
        for flag, treatment in members:
            rollout = rollout_create(
                actor=actor,
                flag=flag,
                environment=environment,
                name=f"{name}: {flag.key}",
                phases=copy.deepcopy(phases),
                checks=copy.deepcopy(checks),
                check_template=check_template,
                deployment=deployment,
                treatment=treatment,
                max_level=max_level,
            )
            rollout.release = release
            rollout.save(update_fields=["release", "updated_at"])
            keys.append({"flag": flag.key, "rollout": rollout.pk})
        record_audit_event(
            actor=actor,
            action="release.created",
            target=release,
            environment=environment.key,
            after={"name": name, "template": template or "", "members": keys},
        )
    return release


def release_get(release_id: Any) -> Release:
    """Return the release (raise NotFound, field ``release``)."""
    try:
        pk = int(release_id)
    except (TypeError, ValueError):
        raise InvalidInput("must be a release id", field="release") from None
    release = Release.objects.select_related("environment").filter(pk=pk).first()
    if release is None:
        raise NotFound(f"unknown release {release_id}", field="release")
    return release


def release_start(*, release_id: Any, actor: Any, reason: str = "") -> Release:
    """Run every member's preflight, then start them all in one transaction.

    The preflights capture each member's baselines outside the transaction
    (they read the look-back's outcome events). Any refusal starts nothing:
    PreflightFailed names the flag. Already started: unchanged. Writes
    ``release.started`` and each member's start events.
    """
    from canary.services.operator import PreflightFailed, rollout_preflight
    from canary.services.rollouts import rollout_start

    release = release_get(release_id)
    if release.status != ReleaseStatus.DRAFT:
        if release.status == ReleaseStatus.RUNNING:
            return release
        raise Conflict(f"release {release.pk} is {release.status}", field="status")
    members = release_members(release)
    reports = {}
    for member in members:
        report = rollout_preflight(rollout_id=member.pk)
        if not report.ok:
            report.problems = [f"{member.flag.key}: {p}" for p in report.problems]
            raise PreflightFailed(report)
        reports[member.pk] = report
    with audited_transaction():
        release = _lock_release(release.pk)
        if release.status != ReleaseStatus.DRAFT:
            return release
        release.started_at = clock.now()
        release.save(update_fields=["started_at"])
        # The release's own event first: release_sync moves it to running
        # while the members start, and this event is that change's record.
        record_audit_event(
            actor=actor,
            action="release.started",
            target=release,
            environment=release.environment.key,
            before={"status": ReleaseStatus.DRAFT},
            after={"status": ReleaseStatus.RUNNING},
            details={
                "reason": reason,
                "members": [m.flag.key for m in members],
            },
        )
        for member in members:
            rollout_start(
                rollout_id=member.pk,
                actor=actor,
                reason=reason or f"release {release.pk} started",
                baseline=reports[member.pk].baseline or None,
                merchant_baseline=reports[member.pk].capture,
            )
        release.refresh_from_db()
    return release


def _each_member(
    release_id: Any,
    *,
    actor: Any,
    action: str,
    reason: str,
    statuses: frozenset[str],
    move: Any,
) -> Release:
    release = release_get(release_id)
    with audited_transaction():
        release = _lock_release(release.pk)
        moved = []
        for member in release_members(release):
            if member.status in statuses:
                move(member)
                moved.append(member.flag.key)
        record_audit_event(
            actor=actor,
            action=action,
            target=release,
            environment=release.environment.key,
            details={"reason": reason, "members": moved},
        )
        release.refresh_from_db()
    return release


def release_pause(*, release_id: Any, actor: Any, reason: str) -> Release:
    """Pause every running member (``release.paused``)."""
    from canary.services.rollout_moves import rollout_pause

    return _each_member(
        release_id,
        actor=actor,
        action="release.paused",
        reason=reason,
        statuses=frozenset({Status.RUNNING, Status.AWAITING_APPROVAL}),
        move=lambda m: rollout_pause(rollout_id=m.pk, actor=actor, reason=reason),
    )


def release_resume(*, release_id: Any, actor: Any, reason: str = "") -> Release:
    """Resume every paused member (``release.resumed``)."""
    from canary.services.rollout_moves import rollout_resume

    return _each_member(
        release_id,
        actor=actor,
        action="release.resumed",
        reason=reason,
        statuses=frozenset({Status.PAUSED}),
        move=lambda m: rollout_resume(rollout_id=m.pk, actor=actor, reason=reason),
    )


def release_approve(*, release_id: Any, actor: Any, reason: str = "") -> Release:
    """Approve the current phase of every member (``release.approved``)."""
    from canary.services.rollout_moves import rollout_approve

    return _each_member(
        release_id,
        actor=actor,
        action="release.approved",
        reason=reason,
        statuses=ACTIVE,
        move=lambda m: rollout_approve(
            rollout_id=m.pk, actor=actor, reason=reason, expected_phase=m.current_phase
        ),
    )


def release_abort(*, release_id: Any, actor: Any, reason: str) -> Release:
    """Abort every member not finished: each flag goes back as captured."""
    from canary.services.rollout_moves import rollout_abort

    return _each_member(
        release_id,
        actor=actor,
        action="release.abort_requested",
        reason=reason,
        statuses=ACTIVE | {Status.DRAFT},
        move=lambda m: rollout_abort(rollout_id=m.pk, actor=actor, reason=reason),
    )
