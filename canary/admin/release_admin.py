"""The release admin: several flags through one plan together.

Read-only pages: the list (status, member counts), and a release's page
with its members, each feature's estimates per check, what was rolled
back and why, and the release's audit events. The buttons (Start, Pause,
Resume, Approve, Abort) and the add page call ``canary.services.releases``
as the admin user, so every change has its audit event; a start goes
through the four-eyes gate like the API's.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from canary.admin.display import phase_text, tone_html, when_html
from canary.admin.forms import ReasonForm, RequiredReasonForm
from canary.admin.object_actions import ObjectAction, ObjectActionsMixin
from canary.admin.release_forms import ReleaseCreateForm
from canary.models import Release, ReleaseStatus
from canary.release_selectors import (
    estimate_text,
    release_counts,
    release_estimates_now,
    release_member_rows,
)
from canary.services import releases as release_services
from controlplane.audit.actors import Actor, actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import DomainError
from flags.changes import gate

AUDIT_EVENTS_SHOWN = 50


def _start(actor: Actor, release: Release, data: dict) -> Any:
    reason = data.get("reason", "")
    return gate.submit(  # four-eyes may turn it into a change request
        actor=actor,
        operation="release.start",
        arguments={"release": release.pk, "reason": reason},
        apply=lambda: release_services.release_start(
            release_id=release.pk, actor=actor, reason=reason
        ),
    )


_LIVE = frozenset({ReleaseStatus.RUNNING})
ACTIONS: dict[str, ObjectAction] = {
    action.name: action
    for action in (
        ObjectAction(
            "start",
            "Start",
            "Every member's preflight runs first; any refusal starts nothing. "
            "Then every flag's state is captured and phase 1 goes live for all "
            "of them together.",
            ReasonForm,
            _start,
            frozenset({ReleaseStatus.DRAFT}),
        ),
        ObjectAction(
            "pause",
            "Pause",
            "Every running member stops advancing. Checks keep running, and a "
            "failure still rolls back.",
            RequiredReasonForm,
            lambda actor, r, d: release_services.release_pause(
                release_id=r.pk, actor=actor, reason=d["reason"]
            ),
            _LIVE,
        ),
        ObjectAction(
            "resume",
            "Resume",
            "Every paused member runs again.",
            ReasonForm,
            lambda actor, r, d: release_services.release_resume(
                release_id=r.pk, actor=actor, reason=d.get("reason", "")
            ),
            _LIVE,
        ),
        ObjectAction(
            "approve",
            "Approve",
            "Approve leaving the current phase, for every active member.",
            ReasonForm,
            lambda actor, r, d: release_services.release_approve(
                release_id=r.pk, actor=actor, reason=d.get("reason", "")
            ),
            _LIVE,
        ),
        ObjectAction(
            "abort",
            "Abort",
            "Every member not finished ends, and each flag's state and pilot "
            "overrides are put back as they were captured at start.",
            RequiredReasonForm,
            lambda actor, r, d: release_services.release_abort(
                release_id=r.pk, actor=actor, reason=d["reason"]
            ),
            frozenset({ReleaseStatus.DRAFT, ReleaseStatus.RUNNING}),
            is_destructive=True,
        ),
    )
}


def _event_why(details: dict) -> str:
    """Return an audit event's reason, or the features it names."""
    if details.get("reason"):
        return str(details["reason"])
    parts = []
    if "features_deployed" in details:
        parts.append(f"deployed: {', '.join(details['features_deployed']) or 'none'}")
    rolled = details.get("features_rolled_back", details.get("rolled_back"))
    if rolled:
        keys = [item["flag"] if isinstance(item, dict) else item for item in rolled]
        parts.append(f"rolled back: {', '.join(map(str, keys))}")
    return "; ".join(parts)


def _table(table_id: str, head: tuple[str, ...], rows: list[tuple]) -> SafeString:
    cells = "".join(f"<td>{{{i}}}</td>" for i in range(len(head)))
    return format_html(
        "<table id='{}'><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        table_id,
        format_html_join("", "<th>{}</th>", ((h,) for h in head)),
        format_html_join("", f"<tr>{cells}</tr>", rows),
    )


@admin.register(Release)
class ReleaseAdmin(ObjectActionsMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "environment",
        "status_badge",
        "members",
        "deployed",
        "rolled_back",
        "started",
    ]
    list_filter = ["status", "environment"]
    search_fields = ["name"]
    list_select_related = ["environment"]
    fields = [
        "name",
        "environment",
        "status_badge",
        "template",
        "created_by",
        "started",
        "finished",
        "members_table",
        "estimates_table",
        "rolled_back_table",
        "audit_events",
    ]
    readonly_fields = fields
    change_form_template = "admin/canary/release/change_form.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The page is read-only; every change is a button calling a service.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Counts as annotations: a constant number of queries per page.
        return release_counts(super().get_queryset(request))

    object_actions = ACTIONS

    def action_queryset(self) -> QuerySet:
        return release_counts(Release.objects.select_related("environment"))

    def action_summary(self, release: Release) -> str:
        return (
            f"{release.name} in {release.environment.key}, {release.status}, "
            f"{release.member_count} members"
        )

    # -- columns --------------------------------------------------------------

    @admin.display(description="status", ordering="status")
    def status_badge(self, release: Release) -> str:
        return tone_html(release.status)

    @admin.display(description="members", ordering="member_count")
    def members(self, release: Release) -> int:
        return release.member_count

    @admin.display(description="deployed", ordering="deployed_count")
    def deployed(self, release: Release) -> int:
        return release.deployed_count

    @admin.display(description="rolled back", ordering="rolled_back_count")
    def rolled_back(self, release: Release) -> int:
        return release.rolled_back_count

    @admin.display(description="started at", ordering="started_at")
    def started(self, release: Release) -> str:
        return when_html(release.started_at)

    @admin.display(description="finished at")
    def finished(self, release: Release) -> str:
        return when_html(release.finished_at)

    # -- the release's page ---------------------------------------------------

    @admin.display(description="members")
    def members_table(self, release: Release) -> str:
        rows = [
            (
                format_html(
                    '<a href="{}"><code>{}</code></a>',
                    reverse("admin:flags_flag_change", args=[m.flag.pk]),
                    m.flag.key,
                ),
                format_html(
                    '<a href="{}">rollout {}</a>',
                    reverse("admin:canary_rollout_change", args=[m.pk]),
                    m.pk,
                ),
                tone_html(m.status),
                phase_text(m.current_phase, m.phase_count, m.phase_name or ""),
                m.treatment_variation or "-",
            )
            for m in release_member_rows(release)
        ]
        return _table(
            "release-members",
            ("flag", "member rollout", "status", "current phase", "treatment"),
            rows,
        )

    @admin.display(description="estimates per feature and check")
    def estimates_table(self, release: Release) -> str:
        rows = [
            (
                format_html("<code>{}</code>", flag),
                check,
                phase_text(row.get("phase")),
                format_html(
                    "{} <small>[{}, {}]</small>",
                    estimate_text(row, "estimate"),
                    estimate_text(row, "lower"),
                    estimate_text(row, "upper"),
                ),
                estimate_text(row, "margin"),
                tone_html(row.get("decision")),
            )
            for flag, checks in release_estimates_now(release).items()
            for check, row in checks.items()
        ]
        if not rows:
            return "none yet (no compare check has measured)"
        return _table(
            "release-estimates",
            ("flag", "check", "phase", "estimate [lower, upper]", "margin", "decision"),
            rows,
        )

    @admin.display(description="rolled back")
    def rolled_back_table(self, release: Release) -> str:
        rows = [
            (
                format_html("<code>{}</code>", item.get("flag", "")),
                phase_text(item.get("phase")),
                tone_html(item.get("scope")),
                item.get("reason") or "-",
            )
            for item in (release.summary or {}).get("rolled_back") or []
        ]
        if not rows:
            return "none"
        return _table("release-rolled-back", ("flag", "phase", "scope", "reason"), rows)

    @admin.display(description=f"audit events (last {AUDIT_EVENTS_SHOWN})")
    def audit_events(self, release: Release) -> str:
        events = AuditEvent.objects.filter(
            target_type="canary.release", target_id=str(release.pk)
        ).order_by("-id")[:AUDIT_EVENTS_SHOWN]
        rows = [
            (
                when_html(event.created_at),
                f"{event.actor_type}:{event.actor_name}",
                event.action,
                _event_why(event.details or {}),
            )
            for event in events
        ]
        return _table("release-audit", ("time", "actor", "action", "why"), rows)

    # -- pages ----------------------------------------------------------------

    def get_urls(self) -> list:
        return [*self.object_action_urls(), *super().get_urls()]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            release = self.get_object(request, admin.utils.unquote(object_id))
            extra_context["release_actions"] = self.object_action_links(
                request, release
            )
            extra_context["audit_history_url"] = audit_history_url(
                target_type="canary.release", target_id=object_id
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        """Create a draft release from a named plan through ``release_create``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ReleaseCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                release = release_services.release_create(
                    actor=actor_for_user(request.user),
                    environment=data["environment"],
                    flags=[flag.key for flag in data["flags"]],
                    template=data["template"],
                    name=data["name"] or None,
                    pilot_merchants=data["pilot_merchants"],
                    duration_scale=data["duration_scale"],
                    check_template=data["check_template"] or None,
                )
            except DomainError as exc:
                form.add_error(
                    "flags" if (exc.field or "").startswith("flags") else None,
                    exc.message,
                )
            else:
                self.message_user(
                    request,
                    f"Release {release.pk} created as a draft with "
                    f"{len(data['flags'])} member rollouts. Start it with the "
                    "Start button.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:canary_release_change", args=[release.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Create a release from a plan",
            "opts": self.model._meta,
            "form": form,
            "intro": "One draft rollout per flag, all with the same plan; the "
            "release is created as a draft, start it from its page.",
            "submit_label": "Create draft",
        }
        return TemplateResponse(request, "admin/canary/rollout/form_page.html", context)
