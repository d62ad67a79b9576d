"""Permissions of the management API: Django model permissions.

A view names the model it acts on (``permission_model``); reading needs the
model's ``view`` permission, creating ``add``, changing (and every command
such as kill or percentage) ``change``, deleting ``delete``. A view may name
the actions a method stands for (``permission_actions``). Management API
keys carry the permissions of their service user, so the same check holds.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from controlplane.audit.actors import Actor, actor_for_user

_METHOD_ACTIONS = {
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def required_permissions(view: Any, method: str) -> list[str]:
    """Return the ``app_label.action_model`` permissions ``method`` needs.

    ``view.permission_actions`` (method -> actions) overrides the defaults,
    e.g. ``{"POST": ("change",)}`` for a command endpoint.
    """
    model = view.permission_model
    overrides = getattr(view, "permission_actions", None) or {}
    if method in overrides:
        actions = tuple(overrides[method])
    elif method in SAFE_METHODS:
        actions = ("view",)
    else:
        actions = (_METHOD_ACTIONS.get(method, "change"),)
    return [
        f"{model._meta.app_label}.{action}_{model._meta.model_name}"
        for action in actions
    ]


class HasModelPermission(BasePermission):
    """Allow an authenticated user holding the model permission the method needs."""

    message = "You do not have permission to do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        permissions = required_permissions(view, request.method)
        self.message = (
            f"You need the {' and '.join(permissions)} permission to do this."
        )
        return user.has_perms(permissions)


def check_can_delegate(request: Request, user: Any) -> None:
    """Refuse a management key for a user who may do more than the requester.

    A key carries its service user's permissions; handing out more than one
    holds would be a way around them.
    """
    requester = request.user
    if requester.is_superuser:
        return
    if (
        user.is_superuser
        or not user.get_all_permissions() <= requester.get_all_permissions()
    ):
        raise PermissionDenied(
            f"user {user.get_username()!r} has permissions you do not have; "
            "a key cannot carry more than its creator may do"
        )


def request_actor(request: Request) -> Actor:
    """Return who acts: the API key when one authenticated, else the user."""
    to_actor = getattr(request.auth, "as_actor", None)
    if callable(to_actor):
        return to_actor()
    return actor_for_user(request.user)
