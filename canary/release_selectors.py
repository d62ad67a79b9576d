"""Reads of releases shared by the API, the admin and the command.

``release_list``: releases with their member counts as annotations (one
query whatever the page size). ``release_member_rows``: the member
rollouts with their phase count and current phase name. Reads only: no
write, no audit.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery

from canary.models import Phase, Release, ReleaseStatus, Rollout, RolloutStatus
from controlplane.exceptions import InvalidInput

ROLLED_BACK = (RolloutStatus.ROLLING_BACK, RolloutStatus.ROLLED_BACK)


def release_list(
    *, status: str | None = None, environment: str | None = None
) -> QuerySet[Release]:
    """Return releases, newest first, with ``member_count``,
    ``deployed_count`` (members completed) and ``rolled_back_count``.

    Raise InvalidInput (field ``status``) for an unknown status.
    """
    releases = Release.objects.select_related("environment").order_by("-id")
    if status:
        if status not in ReleaseStatus.values:
            raise InvalidInput(
                f"status: must be one of {', '.join(ReleaseStatus.values)}",
                field="status",
            )
        releases = releases.filter(status=status)
    if environment:
        releases = releases.filter(environment__key=environment)
    return release_counts(releases)


def release_counts(releases: QuerySet[Release]) -> QuerySet[Release]:
    """Annotate ``member_count``, ``deployed_count`` and ``rolled_back_count``."""
    return releases.annotate(
        member_count=Count("members", distinct=True),
        deployed_count=Count(
            "members",
            filter=Q(members__status=RolloutStatus.COMPLETED),
            distinct=True,
        ),
        rolled_back_count=Count(
            "members", filter=Q(members__status__in=ROLLED_BACK), distinct=True
        ),
    )


def release_with_counts(release: Release) -> Release:
    """Return ``release`` re-read with the annotations of ``release_list``."""
    return release_list().get(pk=release.pk)


def release_member_rows(release: Release) -> list[Rollout]:
    """Return the member rollouts (by id) with ``phase_count`` and
    ``phase_name`` (the current phase's) annotated."""
    phases = Phase.objects.filter(rollout=OuterRef("pk")).order_by()
    return list(
        Rollout.objects.filter(release=release)
        .select_related("flag")
        .annotate(
            phase_count=Subquery(
                phases.values("rollout").annotate(n=Count("id")).values("n"),
                output_field=IntegerField(),
            ),
            phase_name=Subquery(
                phases.filter(index=OuterRef("current_phase")).values("name")[:1]
            ),
        )
        .order_by("pk")
    )


def release_estimates_now(release: Release) -> dict[str, Any]:
    """Return the estimates to show: the kept ones once the release ended,
    else each member's last comparison per check."""
    from canary.services.releases import release_estimates

    if release.is_terminal and "estimates" in (release.summary or {}):
        return release.summary["estimates"]
    return release_estimates(release)


def estimate_text(row: dict, key: str) -> str:
    """Return ``row[key]`` (an estimate, bound or margin) in its metric's
    unit: error-rate points (``+1.20 pp``) or a quantile's relative change
    (``+4.5%``); ``-`` when absent."""
    value = row.get(key)
    if value is None:
        return "-"
    sign = "" if key == "margin" else "+"
    if (row.get("metric") or "error_rate") == "error_rate":
        return f"{value * 100:{sign}.2f} pp"
    return f"{value * 100:{sign}.1f}%"
