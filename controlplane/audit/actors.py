"""Who made a change: a person, an API key, or the system itself.

Every service that writes takes an ``actor``. Interfaces build one from what
they have (``actor_for_user(request.user)``, an API key, ``CONTROLLER``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Actor:
    """The author of a change as the audit log records it."""

    type: str  # user | api_key | system | controller
    id: str
    name: str

    def __str__(self) -> str:
        return f"{self.type}:{self.name}"


SYSTEM = Actor(type="system", id="system", name="system")
CONTROLLER = Actor(type="controller", id="controller", name="controller")


def actor_for_user(user: Any) -> Actor:
    """Return the actor for a Django user (anonymous users are refused)."""
    if user is None or not getattr(user, "is_authenticated", False):
        raise ValueError("an anonymous user cannot change state")
    return Actor(type="user", id=str(user.pk), name=user.get_username())


def actor_for_cli(username: str | None = None) -> Actor:
    """Return the actor for an operator at the command line."""
    import getpass

    name = username or getpass.getuser() or "cli"
    return Actor(type="user", id=f"cli:{name}", name=name)


def as_actor(value: Any) -> Actor:
    """Coerce a user, an API key or an Actor to an Actor."""
    if isinstance(value, Actor):
        return value
    to_actor = getattr(value, "as_actor", None)
    if callable(to_actor):
        return to_actor()
    return actor_for_user(value)
