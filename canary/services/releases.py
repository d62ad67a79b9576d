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
    CheckMode,
    CheckRun,
    HealthCheck,
    Release,
    ReleaseStatus,
    Rollout,
)
from canary.services._common import Status
from canary.transitions import ACTIVE, TERMINAL
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


def release_members(release: Release) -> list[Rollout]:
    """Return the member rollouts in a fixed order (their ids)."""
    return list(
        Rollout.objects.filter(release=release).select_related("flag").order_by("pk")
    )


def _lock_release(release_id: int) -> Release:
    release = Release.objects.select_for_update().filter(pk=release_id).first()
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


def release_roll_back(
    *,
    release_id: int,
    actor: Any,
    flags: Sequence[str],
    on_failure: str,
    attribution: dict,
    reasons: dict[str, str],
) -> Release:
    """Roll back the members of ``flags`` (each its own level-N rollback).

    ``attribution`` is ``canary.attribution.Attribution.as_dict()``: a
    partial scope writes ``release.partially_rolled_back`` and the other
    members go on; a whole scope writes ``release.rollback_started``.
    Members already rolling back are left as they are (a duplicate).
    """
    from canary.services.rollbacks import rollout_fail_phase

    with audited_transaction():
        release = _lock_release(release_id)
        members = {m.flag.key: m for m in release_members(release)}
        rolled = []
        for key in flags:
            member = members.get(key)
            if member is None or member.status not in ACTIVE:
                continue
            rollout_fail_phase(
                rollout_id=member.pk,
                actor=actor,
                reason=reasons.get(key) or attribution["reason"],
                on_failure=on_failure,
                details={"release": release.pk, "attribution": attribution},
            )
            rolled.append(key)
        if not rolled:
            return release
        partial = attribution["scope"] == "partial"
        phase = next(iter(members.values())).current_phase
        entries = list((release.summary or {}).get("rolled_back") or [])
        entries.extend(
            {
                "flag": key,
                "phase": phase,
                "reason": reasons.get(key) or attribution["reason"],
                "scope": attribution["scope"],
            }
            for key in rolled
        )
        release.summary = {**(release.summary or {}), "rolled_back": entries}
        release.version += 1
        release.save(update_fields=["summary", "version"])
        record_audit_event(
            actor=actor,
            action=(
                "release.partially_rolled_back"
                if partial
                else "release.rollback_started"
            ),
            target=release,
            environment=release.environment.key,
            details={
                "rolled_back": rolled,
                "continuing": [
                    k
                    for k, m in members.items()
                    if k not in rolled and m.status in ACTIVE
                ],
                "phase": phase,
                "on_failure": on_failure,
                "attribution": attribution,
                "estimates": release_estimates(release),
            },
        )
    return release


def release_estimates(release: Release) -> dict[str, dict[str, dict]]:
    """Return, per member flag and compare check, its last comparison.

    ``{flag: {check: {"phase", "decision", "estimate", "lower", "upper",
    "margin", "treated_merchants", "control_merchants"}}}``: what the
    release's completion and rollback events carry.
    """
    checks = HealthCheck.objects.filter(
        rollout__release=release, mode=CheckMode.COMPARE
    ).select_related("rollout__flag")
    out: dict[str, dict[str, dict]] = {}
    for check in checks:
        run = (
            CheckRun.objects.filter(health_check=check, detail__has_key="comparison")
            .order_by("-measured_at", "-id")
            .first()
        )
        if run is None:
            continue
        comparison = run.detail.get("comparison") or {}
        out.setdefault(check.rollout.flag.key, {})[check.name] = {
            "phase": run.phase_index,
            "decision": comparison.get("decision"),
            **{
                key: comparison.get(key)
                for key in (
                    "estimate",
                    "lower",
                    "upper",
                    "margin",
                    "treated_merchants",
                    "control_merchants",
                )
            },
        }
    return out


def _final_status(statuses: list[str]) -> str | None:
    if not all(status in TERMINAL for status in statuses):
        return None
    if Status.COMPLETED in statuses:
        return ReleaseStatus.COMPLETED
    if Status.ROLLED_BACK in statuses:
        return ReleaseStatus.ROLLED_BACK
    return ReleaseStatus.ABORTED


def release_sync(*, release_id: int, actor: Any) -> Release | None:
    """Follow the members: the only code that assigns ``Release.status``.

    Runs inside the member's transaction (``rollout_transition``). A
    release is running once a member started, and ends when every member
    has: completed when at least one feature is deployed
    (``release.completed``, with the features deployed, those rolled back
    and each one's last estimates per check), rolled back when every
    feature was (``release.rolled_back``), else aborted.
    """
    release = _lock_release(release_id)
    statuses = list(
        Rollout.objects.filter(release=release).values_list("status", flat=True)
    )
    final = _final_status(statuses)
    if final is None:
        target = (
            ReleaseStatus.DRAFT
            if all(s == Status.DRAFT for s in statuses)
            else ReleaseStatus.RUNNING
        )
    else:
        target = final
    if release.status == target or release.is_terminal:
        return release
    before = release.status
    release.status = target
    release.version += 1
    fields = ["status", "version"]
    if final is not None:
        members = release_members(release)
        summary = dict(release.summary or {})
        summary["deployed"] = [
            m.flag.key for m in members if m.status == Status.COMPLETED
        ]
        summary["not_deployed"] = [
            m.flag.key for m in members if m.status != Status.COMPLETED
        ]
        entries = list(summary.get("rolled_back") or [])
        named = {item["flag"] for item in entries}
        # A member rolled back on its own (by hand, by its verification)
        # counts too.
        entries.extend(
            {"flag": m.flag.key, "phase": m.current_phase, "scope": "member"}
            for m in members
            if m.status == Status.ROLLED_BACK and m.flag.key not in named
        )
        summary["rolled_back"] = entries
        summary["estimates"] = release_estimates(release)
        release.summary = summary
        release.finished_at = clock.now()
        fields += ["summary", "finished_at"]
    release.save(update_fields=fields)
    if before == ReleaseStatus.DRAFT and target == ReleaseStatus.RUNNING:
        return release  # release_start wrote release.started in this transaction
    action = {
        ReleaseStatus.COMPLETED: "release.completed",
        ReleaseStatus.ROLLED_BACK: "release.rolled_back",
        ReleaseStatus.ABORTED: "release.aborted",
    }.get(target, "release.status_changed")
    record_audit_event(
        actor=actor,
        action=action,
        target=release,
        environment=Environment.objects.filter(pk=release.environment_id)
        .values_list("key", flat=True)
        .get(),
        before={"status": before},
        after={"status": target},
        details=(
            {
                "features_deployed": release.summary.get("deployed", []),
                "features_rolled_back": [
                    item["flag"] for item in release.summary.get("rolled_back", [])
                ],
                "rolled_back": release.summary.get("rolled_back", []),
                "estimates": release.summary.get("estimates", {}),
            }
            if final is not None
            else {}
        ),
    )
    return release
