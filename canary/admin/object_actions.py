"""The buttons of an object's admin page (rollouts, releases, pipelines).

Each button is an ``ObjectAction``: a confirmation page (GET) with its
form, and the service it calls (POST) as the admin user. The admin's own
``ObjectActionsMixin`` serves the URL ``<id>/do/<action>/``, the page and
the call, and lists the buttons a page shows. What the call returns may
be the changed object, a change request four-eyes made of it, or the
gate's ``Submission`` (either of the two); the message says which.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from controlplane.audit.actors import Actor, actor_for_user
from controlplane.exceptions import DomainError
from flags.changes import gate
from flags.changes.models import ChangeRequest


@dataclass(frozen=True)
class ObjectAction:
    """One button: its confirmation page and the service it calls."""

    name: str
    label: str
    intro: str
    form_class: type[forms.Form]
    # The changed object, a change request, or the gate's Submission.
    apply: Callable[[Actor, Any, dict], Any]
    shown_for: frozenset[str]
    # A further condition on the object (None: its status is enough).
    shown_if: Callable[[Any], bool] | None = None
    # Destructive: styled as a danger button and confirmed in the browser.
    is_destructive: bool = False
    # The change operation an approval policy may gate (None: never gated).
    operation: str | None = None

    def is_shown(self, obj: Any) -> bool:
        return obj.status in self.shown_for and (
            self.shown_if is None or self.shown_if(obj)
        )


def _outcome(result: Any) -> tuple[Any, ChangeRequest | None]:
    """Return (the changed object, None) or (None, the change request)."""
    if isinstance(result, ChangeRequest):
        return None, result
    if getattr(result, "is_pending", False):
        return None, result.change_request
    return getattr(result, "result", result), None


class ObjectActionsMixin:
    """A ModelAdmin's object buttons: set ``object_actions``, add
    ``object_action_urls()`` to ``get_urls`` and pass
    ``object_action_links()`` to the change form."""

    object_actions: dict[str, ObjectAction] = {}

    # -- what an admin may refine -------------------------------------------

    def action_queryset(self) -> QuerySet:
        return self.model.objects.all()

    def action_summary(self, obj: Any) -> str:
        return f"{obj}, {obj.status}"

    def action_intro(self, spec: ObjectAction, obj: Any) -> str:
        return spec.intro

    def pending_change(self, obj: Any) -> ChangeRequest | None:
        """Return the change request the object waits for after an action
        that returned it (None: the action applied)."""
        return None

    # -- shared ---------------------------------------------------------------

    def _noun(self) -> str:
        return str(self.model._meta.model_name)

    def _may_act(self, request: HttpRequest) -> bool:
        opts = self.model._meta
        return request.user.has_perm(f"{opts.app_label}.change_{opts.model_name}")

    def _change_url(self, obj: Model) -> str:
        opts = self.model._meta
        return reverse(
            f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]
        )

    def object_action_urls(self) -> list:
        opts = self.model._meta
        return [
            path(
                "<int:object_id>/do/<slug:action>/",
                self.admin_site.admin_view(self.action_view),
                name=f"{opts.app_label}_{opts.model_name}_action",
            )
        ]

    def object_action_links(self, request: HttpRequest, obj: Any) -> list[dict]:
        """Return the buttons ``obj``'s page shows (none without permission)."""
        if obj is None or not self._may_act(request):
            return []
        opts = self.model._meta
        return [
            {
                "label": action.label,
                "url": reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_action",
                    args=[obj.pk, name],
                ),
                "is_destructive": action.is_destructive,
                "confirm_text": f"{action.label} {self._noun()} {obj.pk} ({obj.name})?",
            }
            for name, action in self.object_actions.items()
            if action.is_shown(obj)
        ]

    def action_view(
        self, request: HttpRequest, object_id: int, action: str
    ) -> HttpResponse:
        """GET: the confirmation page. POST: call the service, back to the page."""
        spec = self.object_actions.get(action)
        obj = get_object_or_404(self.action_queryset(), pk=object_id)
        if spec is None:
            raise PermissionDenied(f"unknown action {action!r}")
        if not self._may_act(request):
            raise PermissionDenied
        noun, change_url = self._noun(), self._change_url(obj)
        form = spec.form_class(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                result = spec.apply(
                    actor_for_user(request.user), obj, form.cleaned_data
                )
            except DomainError as exc:
                self.message_user(
                    request, f"{spec.label} refused: {exc.message}", messages.ERROR
                )
            else:
                changed, change = _outcome(result)
                change = change or self.pending_change(changed)
                if change is not None:  # waits for approval
                    self.message_user(
                        request, gate.pending_message_html(change), messages.WARNING
                    )
                else:
                    self.message_user(
                        request,
                        f"{spec.label}: {noun} {changed.pk} is now {changed.status}.",
                        messages.SUCCESS,
                    )
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "title": f"{spec.label}: {noun} {obj.pk}?",
            "opts": self.model._meta,
            "original": obj,
            "form": form,
            "intro": self.action_intro(spec, obj),
            "summary": self.action_summary(obj),
            "submit_label": f"Yes, {spec.label.lower()}",
            "is_destructive": spec.is_destructive,
            "confirm_text": (
                f"{spec.label}: {noun} {obj.pk} ({obj.name})? This cannot be undone."
            ),
            "cancel_url": change_url,
        }
        return TemplateResponse(request, "admin/canary/rollout/form_page.html", context)
