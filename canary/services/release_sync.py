"""Releases: what the controller and the members' transitions write.

``release_roll_back`` rolls members back on the controller's attribution
(``canary.controller.release_decide``); ``release_sync`` is the only code
that assigns ``Release.status`` (``rollout_transition`` calls it in the
member's transaction); ``release_estimates`` is what their audit events
carry. The operator-facing services are in ``canary.services.releases``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canary import clock
from canary.exceptions import NotFound
from canary.models import (
    CheckMode,
    CheckRun,
    HealthCheck,
    Release,
    ReleaseStatus,
    Rollout,
)
from canary.services._common import Status
from canary.services.checks import checks_reset
from canary.transitions import ACTIVE, TERMINAL
from controlplane.audit.services import audited_transaction, record_audit_event
from flags.models import Environment


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
        continuing = [
            k for k, m in members.items() if k not in rolled and m.status in ACTIVE
        ]
        now = clock.now()
        for key in continuing:
            # The others' phase events so far were served beside the
            # rolled-back feature's harm, which reached both of their arms
            # in expectation only. From now on their compare checks leave
            # out the merchants served that feature's treatment in this
            # phase (``canary.controller.claim._release_context``), so
            # their evidence and soak are kept; their checks must say not
            # worse anew on the cleaned events, measured at once.
            member = members[key]
            checks_reset(rollout=member, phase_index=member.current_phase, now=now)
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
                "continuing": continuing,
                # what the continuing members' compare checks leave out
                # for the rest of the phase
                "excluded_treated_of": rolled if continuing else [],
                "phase": phase,
                "on_failure": on_failure,
                "attribution": attribution,
                "estimates": release_estimates(release),
            },
        )
    return release


def release_estimates(release: Release) -> dict[str, dict[str, dict]]:
    """Return, per member flag and compare check, its last comparison.

    ``{flag: {check: {"phase", "metric", "decision", "estimate", "lower",
    "upper", "margin", "treated_merchants", "control_merchants"}}}`` from
    the last run of the phases (a verification window's runs after a
    rollback are left out): what the release's completion and rollback
    events carry.
    """
    checks = HealthCheck.objects.filter(
        rollout__release=release, mode=CheckMode.COMPARE
    ).select_related("rollout__flag")
    out: dict[str, dict[str, dict]] = {}
    for check in checks:
        # The phases' runs, not a rollback's verification window: what the
        # release decided on.
        run = (
            CheckRun.objects.filter(health_check=check, detail__has_key="comparison")
            .exclude(detail__has_key="verification")
            .order_by("-measured_at", "-id")
            .first()
        )
        if run is None:
            continue
        comparison = run.detail.get("comparison") or {}
        out.setdefault(check.rollout.flag.key, {})[check.name] = {
            "phase": run.phase_index,
            "metric": comparison.get("metric"),
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
    if final is not None:  # a pipeline's stage moves its pipeline on
        from canary.services.pipelines import pipeline_stage_finished

        pipeline_stage_finished(release_id=release.pk, actor=actor)
    return release
