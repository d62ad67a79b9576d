"""The audit log in the admin: read-only, filterable, one history per object.

Nobody adds, changes or deletes an event here (the model refuses too). The
changelist filters by ``target_type`` and ``target_id`` from the query
string, which is what the "History (audit)" link of every change page opens.
An event's page shows what changed as rows (``controlplane.audit.diff``) and
links the target; the list shows whether each chain verifies
(``controlplane.audit.chain_status``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from controlplane.audit import admin_filters
from controlplane.audit.admin_filters import target_type_label
from controlplane.audit.chain_status import (
    AUTO_VERIFY_EVENTS,
    audit_chain_status,
    audit_chain_status_verify,
)
from controlplane.audit.diff import (
    Change,
    detail_values,
    event_changes,
    value_text,
)
from controlplane.audit.models import AuditEvent
from controlplane.console.templatetags.console import TONES, when

# Rows a page shows before "and N more" (a bulk event can list thousands).
MAX_ROWS = 300
# Changes a list row summarizes.
SUMMARY_ROWS = 2
# Fields whose values are statuses: shown with their tone.
_STATUS_FIELDS = frozenset({"status", "verification_state", "to", "from", "verdict"})


def audit_history_url(*, target_type: str, target_id: Any) -> str:
    """Return the audit changelist URL filtered to one target."""
    query = urlencode({"target_type": target_type, "target_id": str(target_id)})
    return f"{reverse('admin:audit_auditevent_changelist')}?{query}"


def target_urls(
    site: admin.AdminSite, request: HttpRequest, events: list[AuditEvent]
) -> dict[tuple[str, str], str]:
    """Return the admin change URL of each event's target that still exists.

    One query per target type on the page; a type without an admin, a
    target the user may not view, or one that was deleted gets no URL.
    """
    wanted: dict[str, set[str]] = {}
    for event in events:
        wanted.setdefault(event.target_type, set()).add(event.target_id)
    urls: dict[tuple[str, str], str] = {}
    for target_type, ids in wanted.items():
        model_admin = _model_admin(site, target_type)
        if model_admin is None or not model_admin.has_view_or_change_permission(
            request
        ):
            continue
        model = model_admin.model
        keys = []
        for raw in ids:
            try:
                keys.append(model._meta.pk.to_python(raw))
            except (ValidationError, ValueError, TypeError):
                continue  # not a key this model can have: plain text
        existing = model._default_manager.filter(pk__in=keys).values_list(
            "pk", flat=True
        )
        opts = model._meta
        for pk in existing:
            try:
                urls[(target_type, str(pk))] = reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change", args=[pk]
                )
            except NoReverseMatch:
                break
    return urls


def _model_admin(site: admin.AdminSite, target_type: str) -> admin.ModelAdmin | None:
    try:
        model = apps.get_model(target_type)
    except (LookupError, ValueError):
        return None  # a tuple target ("environment", key) or a removed model
    if not site.is_registered(model):
        return None
    return site.get_model_admin(model)


def action_tone(event: AuditEvent) -> str:
    """Return the tone of an event's action, "" when it has none.

    A transition takes the tone of the status it went to; other actions the
    tone of their verb's last word (``rollback.step_succeeded``: ok).
    """
    details = event.details if isinstance(event.details, dict) else {}
    if event.action.endswith(".transition") and isinstance(details.get("to"), str):
        return TONES.get(details["to"], "")
    verb = event.action.rpartition(".")[2]
    return TONES.get(verb) or TONES.get(verb.rpartition("_")[2], "")


def _value_html(change: Change, value: Any) -> str:
    return _value_of(change.path[-1] if change.path else "", value)


def _value_of(last: Any, value: Any) -> str:
    text = value_text(value)
    if last in _STATUS_FIELDS and isinstance(value, str) and value in TONES:
        return format_html('<span class="tone tone-{}">{}</span>', TONES[value], text)
    return format_html("<code>{}</code>", text) if text != "—" else text


def change_rows(event: AuditEvent) -> list[dict[str, Any]]:
    """Return the rows of what ``event`` changed, ready for the template."""
    return [
        {
            "field": _breakable(change.field),
            "path": change.field,
            "kind": change.kind,
            "before": _value_html(change, change.before),
            "after": _value_html(change, change.after),
        }
        for change in event_changes(
            before=event.before, after=event.after, details=event.details
        )
    ]


def detail_rows(event: AuditEvent) -> list[dict[str, Any]]:
    """Return the context of ``event`` (reason, phase, ids) as rows."""
    return [
        {
            "field": _breakable(path),
            "path": path,
            "value": _value_of(path.rpartition(".")[2], value),
        }
        for path, value in detail_values(event.details)
    ]


def _breakable(path: str) -> str:
    """Return a field path that may wrap after its dots (a narrow column)."""
    return format_html_join(
        mark_safe(".<wbr>"), "{}", ((part,) for part in path.split("."))
    )


def _pretty(value: Any) -> str:
    import json

    if value is None or value == {}:
        return "-"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre class="audit-json">{}</pre>', text)


class ReadOnlyAdminMixin:
    """A model admin that can list and show rows but never add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class AuditChangeList(ChangeList):
    """The changelist, with each row's target URL found in one go."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        events = list(self.result_list)
        urls = target_urls(self.model_admin.admin_site, request, events)
        for event in events:
            event._target_url = urls.get((event.target_type, event.target_id))
        self.result_list = events


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "time",
        "actor",
        "action_label",
        "target",
        "summary",
    ]
    list_display_links = ["time"]
    list_filter = [
        admin_filters.ActorFilter,
        "actor_type",
        "action",
        admin_filters.TargetTypeFilter,
        admin_filters.EnvironmentFilter,
        admin_filters.TimeFilter,
    ]
    date_hierarchy = "created_at"
    search_fields = ["actor_name", "target_repr", "=target_id", "=request_id"]
    actions = None
    list_per_page = 50
    fieldsets = [
        (
            "Event",
            {
                "fields": [
                    "id",
                    "time",
                    "actor",
                    "action_label",
                    "target",
                    "environment_label",
                    "request_id",
                ]
            },
        ),
        (
            "Raw JSON",
            {
                "classes": ["collapse"],
                "fields": ["before_json", "after_json", "details_json"],
            },
        ),
        (
            "Chain",
            {
                "classes": ["collapse"],
                "fields": ["chain_position", "prev_hash", "hash"],
            },
        ),
    ]
    readonly_fields = [
        "id",
        "time",
        "actor",
        "action_label",
        "target",
        "environment_label",
        "request_id",
        "before_json",
        "after_json",
        "details_json",
        "chain_position",
        "prev_hash",
        "hash",
    ]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return AuditChangeList

    def get_urls(self) -> list:
        verify = self.admin_site.admin_view(require_POST(self.verify_chains_view))
        return [
            path("verify-chains/", verify, name="audit_auditevent_verify_chains"),
            *super().get_urls(),
        ]

    def verify_chains_view(self, request: HttpRequest) -> HttpResponse:
        """Verify every chain now (the list's "Verify now" button)."""
        if not self.has_view_permission(request):
            return HttpResponse("You may not view the audit log.", status=403)
        report = audit_chain_status_verify()
        if report.broken:
            messages.error(
                request,
                "Audit chain broken: "
                + "; ".join(
                    f"{chain.chain} at event {chain.broken_id}"
                    for chain in report.broken
                ),
            )
        else:
            messages.success(
                request,
                f"Every audit chain verifies ({len(report.chains)} chains, "
                f"{report.events} events).",
            )
        # Back to the list as it was filtered; only a query string is taken
        # from the form, so this cannot redirect anywhere else.
        query = request.POST.get("query", "")
        back = reverse("admin:audit_auditevent_changelist")
        if query and len(query) <= 2000 and "\x00" not in query:
            back = f"{back}?{QueryDict(query).urlencode()}"
        return HttpResponseRedirect(back)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        problem = admin_filters.TimeFilter.problem(request)
        if problem:
            return HttpResponse(problem, status=400, content_type="text/plain")
        extra_context = {"title": "Audit events", **(extra_context or {})}
        target_type = request.GET.get("target_type", "")
        target_id = request.GET.get("target_id", "")
        if target_type and target_id:
            latest = (
                AuditEvent.objects.filter(target_type=target_type, target_id=target_id)
                .values_list("target_repr", flat=True)
                .first()
            )
            extra_context["audit_target"] = {
                "type": target_type,
                "id": target_id,
                "repr": latest or target_id,
                "clear_url": reverse("admin:audit_auditevent_changelist"),
            }
        extra_context["chain_status"] = audit_chain_status(
            auto_verify_events=AUTO_VERIFY_EVENTS
        )
        return super().changelist_view(request, extra_context)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> AuditEvent | None:
        event = super().get_object(request, object_id, from_field)
        if event is not None:
            urls = target_urls(self.admin_site, request, [event])
            event._target_url = urls.get((event.target_type, event.target_id))
        return event

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: AuditEvent | None = None,
    ) -> TemplateResponse:
        if obj is not None:
            rows = change_rows(obj)
            context.update(
                # the target has its own row: keep the heading short enough
                # to leave room for the object tools beside it
                subtitle=f"#{obj.pk} {obj.action}",
                changes=rows[:MAX_ROWS],
                changes_hidden=max(0, len(rows) - MAX_ROWS),
                details=detail_rows(obj)[:MAX_ROWS],
                target_url=getattr(obj, "_target_url", None),
                target_history_url=audit_history_url(
                    target_type=obj.target_type, target_id=obj.target_id
                ),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # -- columns and fields ----------------------------------------------------

    @admin.display(description="time", ordering="created_at")
    def time(self, event: AuditEvent) -> str:
        return when(event.created_at)

    @admin.display(description="actor", ordering="actor_name")
    def actor(self, event: AuditEvent) -> str:
        if event.actor_name == event.actor_type:
            return event.actor_name  # system, controller
        return format_html(
            '{} <small class="quiet">{}</small>', event.actor_name, event.actor_type
        )

    @admin.display(description="action", ordering="action")
    def action_label(self, event: AuditEvent) -> str:
        tone = action_tone(event)
        # a break after the dot: "flag_state." above "percentage_set"
        entity, dot, verb = event.action.rpartition(".")
        label = format_html("{}{}<wbr>{}", entity, dot, verb)
        if not tone:
            return label
        return format_html('<span class="tone tone-{}">{}</span>', tone, label)

    @admin.display(description="target", ordering="target_type")
    def target(self, event: AuditEvent) -> str:
        label = event.target_repr or event.target_id
        url = getattr(event, "_target_url", None)
        kind = format_html(
            '<small class="quiet">{}{}</small>',
            target_type_label(event.target_type),
            f" · {event.environment}" if event.environment else "",
        )
        if url:
            return format_html('<a href="{}">{}</a> {}', url, label, kind)
        return format_html("{} {}", label, kind)

    @admin.display(description="environment", ordering="environment")
    def environment_label(self, event: AuditEvent) -> str:
        return event.environment or "—"

    @admin.display(description="what changed")
    def summary(self, event: AuditEvent) -> str:
        if event.before is None and event.after is not None:
            return format_html('<span class="tone tone-neutral">{}</span>', "created")
        if event.after is None and event.before is not None:
            return format_html('<span class="tone tone-neutral">{}</span>', "removed")
        changes = event_changes(
            before=event.before, after=event.after, details=event.details
        )
        if not changes:
            return "—"
        shown = format_html_join(
            "",
            '<span class="audit-change">{}: {} → {}</span>',
            (
                (
                    _breakable(change.field),
                    value_text(change.before, limit=40),
                    value_text(change.after, limit=40),
                )
                for change in changes[:SUMMARY_ROWS]
            ),
        )
        more = len(changes) - SUMMARY_ROWS
        if more > 0:
            return format_html('{}<small class="quiet">+{} more</small>', shown, more)
        return shown

    @admin.display(description="chain")
    def chain_position(self, event: AuditEvent) -> str:
        if event.chain_seq is None:
            return f"{event.chain} (before chains had positions)"
        return f"{event.chain} #{event.chain_seq}"

    @admin.display(description="before")
    def before_json(self, event: AuditEvent) -> str:
        return _pretty(event.before)

    @admin.display(description="after")
    def after_json(self, event: AuditEvent) -> str:
        return _pretty(event.after)

    @admin.display(description="details")
    def details_json(self, event: AuditEvent) -> str:
        return _pretty(event.details)
