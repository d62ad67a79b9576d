"""Shared pieces of the flags admin: the service-backed base class, the
kill / restore / percentage actions with their confirmation page and
read-only inlines (the list filters are in flags.admin.filters).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Model, QuerySet
from django.forms import BaseForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from controlplane.audit.actors import Actor, actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.exceptions import DomainError
from controlplane.paginator import EstimatedCountPaginator
from flags import services
from flags.changes import gate
from flags.forms import EnvironmentChoiceForm, KillForm, PercentageForm, RestoreForm
from flags.models import FlagState, MerchantOverride

# -- display helpers ----------------------------------------------------------------


def _percent(weight: int) -> str:
    return f"{weight / 1000:g}%"


def state_serving(state: FlagState) -> str:
    """Return what a state serves by default, e.g. ``10%`` or ``blue``."""
    fallthrough = state.fallthrough or {}
    is_bool = state.flag.value_type == "bool"
    if "split" in fallthrough:
        arms = fallthrough["split"]
        if is_bool and arms and arms[0]["variation"] == "on":
            text = _percent(arms[0]["weight"])
        else:
            text = " / ".join(
                f"{arm['variation']} {_percent(arm['weight'])}" for arm in arms
            )
    elif is_bool:
        text = "100%" if fallthrough.get("variation") == "on" else "0%"
    else:
        text = str(fallthrough.get("variation", "?"))
    if state.rules:
        count = len(state.rules)
        text += f" +{count} rule{'s' if count != 1 else ''}"
    return text


def state_status(state: FlagState) -> str:
    """Return ``killed``, ``off`` or ``on <serving>`` for one flag state."""
    if state.killed_at is not None:
        return "killed"
    if not state.enabled:
        return "off"
    return f"on {state_serving(state)}"


def _admin_change_url(obj: Model) -> str:
    opts = obj._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])


def _link(obj: Model, label: Any = None) -> str:
    return format_html('<a href="{}">{}</a>', _admin_change_url(obj), label or str(obj))


def _adopt(target: Model, saved: Model) -> None:
    """Make the admin's unsaved instance the row the service saved."""
    for field in target._meta.concrete_fields:
        setattr(target, field.attname, getattr(saved, field.attname))
    target._state.adding = False
    target._state.db = saved._state.db


def _form_field_for(form: BaseForm, field: str | None) -> str | None:
    """Return the visible form field a service error points at, if any."""
    if not field:
        return None
    name = re.split(r"[.\[]", field, maxsplit=1)[0]
    if name in form.fields and not form.fields[name].widget.is_hidden:
        return name
    return None


def _with_service_error(
    form_class: type[BaseForm], error: DomainError
) -> type[BaseForm]:
    class ServiceErrorForm(form_class):  # type: ignore[misc, valid-type]
        def clean(self) -> Any:
            cleaned = super().clean()
            self.add_error(_form_field_for(self, error.field), error.message)
            return cleaned

    ServiceErrorForm.__name__ = form_class.__name__
    return ServiceErrorForm


# -- base class ----------------------------------------------------------------------


class ServiceModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose writes go through services.

    Subclasses implement ``service_create`` / ``service_update`` (and
    ``service_delete`` when ``can_delete``); each returns the saved row.
    """

    can_delete = False
    save_as = False
    # a million merchants: no second COUNT(*) of the whole table per page,
    # and the unfiltered count estimated on PostgreSQL
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    def service_create(self, actor: Actor, data: dict[str, Any]) -> Model:
        raise NotImplementedError

    def service_update(self, actor: Actor, obj: Any, data: dict[str, Any]) -> Model:
        raise NotImplementedError

    def service_delete(self, actor: Actor, obj: Any) -> None:
        raise NotImplementedError

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.can_delete and super().has_delete_permission(request, obj)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            extra_context["audit_history_url"] = audit_history_url(
                target_type=self.model._meta.label_lower,
                target_id=admin.utils.unquote(object_id),
            )
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as exc:
            if request.method != "POST" or hasattr(request, "_service_error"):
                raise
            # The view's transaction rolled back. Render the same POST again,
            # this time with the service's refusal as a form error.
            request._service_error = exc  # type: ignore[attr-defined]
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[BaseForm]:
        form_class = super().get_form(request, obj, change, **kwargs)
        error = getattr(request, "_service_error", None)
        return _with_service_error(form_class, error) if error else form_class

    def save_model(
        self, request: HttpRequest, obj: Any, form: BaseForm, change: bool
    ) -> None:
        actor = actor_for_user(request.user)
        if change:
            saved = self.service_update(actor, obj, form.cleaned_data)
        else:
            saved = self.service_create(actor, form.cleaned_data)
        _adopt(obj, saved)

    def save_related(
        self, request: HttpRequest, form: BaseForm, formsets: Any, change: bool
    ) -> None:
        """Save nothing: inlines here are read-only and no model has m2m fields."""
        for formset in formsets:  # what the admin's change message reads
            formset.new_objects, formset.changed_objects, formset.deleted_objects = (
                [],
                [],
                [],
            )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        self.service_delete(actor_for_user(request.user), obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = actor_for_user(request.user)
        failures = []
        for obj in queryset:
            try:
                self.service_delete(actor, obj)
            except DomainError as exc:
                failures.append(f"{obj}: {exc.message}")
        if failures:
            self.message_user(
                request, "Not deleted: " + "; ".join(failures), messages.ERROR
            )

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except DomainError as exc:
            self.message_user(request, f"Not deleted: {exc.message}", messages.ERROR)
            opts = self.model._meta
            return HttpResponseRedirect(
                reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id]
                )
            )


# -- actions on flag states (kill switch, restore, rollout percentage) -----------------


@dataclass(frozen=True)
class StateAction:
    title: str
    intro: str
    submit_label: str
    done: str
    form_class: type
    apply: Callable[[Actor, FlagState, dict], FlagState]
    confirm: str = ""  # asked in the browser before a destructive submit
    # The gated operation (flags.changes) and its arguments from the form
    operation: str = ""
    arguments: Callable[[dict], dict] = lambda data: {}


def _kill(actor: Actor, state: FlagState, data: dict) -> FlagState:
    return services.flag_state_kill(
        actor=actor,
        flag=state.flag,
        environment=state.environment,
        reason=data["reason"],
    )


def _restore(actor: Actor, state: FlagState, data: dict) -> FlagState:
    return services.flag_state_restore(
        actor=actor,
        flag=state.flag,
        environment=state.environment,
        reason=data["reason"],
    )


def _set_percentage(actor: Actor, state: FlagState, data: dict) -> FlagState:
    return services.flag_state_set_percentage(
        actor=actor,
        flag=state.flag,
        environment=state.environment,
        percentage=float(data["percentage"]),
        treatment=data["treatment"] or None,
        control=data["control"] or None,
    )


KILL = StateAction(
    title="Kill switch",
    intro="Everyone gets the off variation in these flag states, now.",
    submit_label="Kill",
    done="Killed",
    form_class=KillForm,
    apply=_kill,
    confirm="Kill: everyone gets the off variation in these flag states, now.",
    operation="flag_state.kill",
    arguments=lambda data: {"reason": data["reason"]},
)
RESTORE = StateAction(
    title="Restore after a kill",
    intro="Targeting turns on again in these flag states, as it was before the kill.",
    submit_label="Restore",
    done="Restored",
    form_class=RestoreForm,
    apply=_restore,
    operation="flag_state.restore",
    arguments=lambda data: {"reason": data["reason"]},
)
SET_PERCENTAGE = StateAction(
    title="Set rollout percentage",
    intro="The default (fallthrough) of these flag states becomes a split serving the "
    "treatment to this share of merchants. Overrides and rules still come first.",
    submit_label="Set percentage",
    done="Set the percentage of",
    form_class=PercentageForm,
    apply=_set_percentage,
    operation="flag_state.percentage",
    arguments=lambda data: {
        "percentage": float(data["percentage"]),
        "treatment": data["treatment"] or None,
        "control": data["control"] or None,
    },
)


def _confirm_state_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    spec: StateAction,
    *,
    by_environment: bool,
) -> HttpResponse | None:
    """Show the confirmation page; on confirm, apply ``spec`` state by state.

    ``by_environment``: the queryset holds flags, and the page asks for the
    environment whose states change.
    """
    confirmed = request.POST.get("confirm") == "yes"
    form = spec.form_class(request.POST if confirmed else None)
    environment_form = (
        EnvironmentChoiceForm(request.POST if confirmed else None)
        if by_environment
        else None
    )
    if (
        confirmed
        and form.is_valid()
        and (environment_form is None or environment_form.is_valid())
    ):
        if environment_form is not None:
            states: Iterable[FlagState] = FlagState.objects.select_related(
                "flag", "environment"
            ).filter(
                flag__in=queryset,
                environment=environment_form.cleaned_data["environment"],
            )
        else:
            states = queryset.select_related("flag", "environment")
        _apply_state_action(modeladmin, request, list(states), spec, form.cleaned_data)
        return None  # back to the changelist, with the messages
    objects = list(queryset)
    if by_environment:
        rows = [
            {
                "url": _admin_change_url(flag),
                "label": flag.key,
                "status": " / ".join(
                    f"{s.environment.key}: {state_status(s)}" for s in flag.states.all()
                ),
            }
            for flag in queryset.prefetch_related("states__environment", "states__flag")
        ]
    else:
        rows = [
            {"url": _admin_change_url(s), "label": str(s), "status": state_status(s)}
            for s in queryset.select_related("flag", "environment")
        ]
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": spec.title,
        "intro": spec.intro,
        "rows_title": "Flags (pick the environment below)"
        if by_environment
        else "Affected flag states",
        "rows": rows,
        "objects": objects,
        "opts": modeladmin.model._meta,
        "action": request.POST.get("action", ""),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "form": form,
        "environment_form": environment_form,
        "submit_label": spec.submit_label,
        "confirm": spec.confirm,
    }
    return TemplateResponse(request, "admin/flags/action_confirm.html", context)


def _apply_state_action(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    states: list[FlagState],
    spec: StateAction,
    data: dict,
) -> None:
    actor = actor_for_user(request.user)
    done, failed, pending = [], [], []
    for state in states:  # one service call (and audit event) per state
        try:
            outcome = gate.submit(  # four-eyes may make it a change request
                actor=actor,
                operation=spec.operation,
                arguments=gate.state_arguments(
                    flag=state.flag.key,
                    environment=state.environment.key,
                    **spec.arguments(data),
                ),
                apply=lambda state=state: spec.apply(actor, state, data),
            )
            if outcome.is_pending:
                pending.append(gate.pending_message_html(outcome.change_request))
            else:
                done.append(str(state))
        except DomainError as exc:
            failed.append(f"{state}: {exc.message}")
    for line in pending:
        modeladmin.message_user(request, line, messages.WARNING)
    if done:
        modeladmin.message_user(
            request,
            f"{spec.done} {len(done)} flag state(s): {', '.join(done)}.",
            messages.SUCCESS,
        )
    if failed:
        modeladmin.message_user(
            request, f"Failed for {len(failed)}: {'; '.join(failed)}", messages.ERROR
        )


# -- inlines (read-only, with links) ----------------------------------------------------


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class FlagStateInline(ReadOnlyInline):
    model = FlagState
    verbose_name_plural = (
        "flag states per environment (open one to edit or see its history)"
    )
    fields = ["environment", "status", "version", "kill_reason", "updated_at"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("flag", "environment")

    @admin.display(description="status")
    def status(self, state: FlagState) -> str:
        return state_status(state)


class MerchantOverrideInline(ReadOnlyInline):
    model = MerchantOverride
    fields = ["environment", "merchant_link", "variation", "expires_at", "note"]
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("flag", "environment", "merchant")
        )

    @admin.display(description="merchant")
    def merchant_link(self, override: MerchantOverride) -> str:
        return _link(override.merchant)
