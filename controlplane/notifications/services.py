"""Configure destinations; each change audited, secrets never recorded."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from controlplane.audit.actors import as_actor
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import InvalidInput
from controlplane.notifications.dispatch import deliveries_create
from controlplane.notifications.messages import sample_notice
from controlplane.notifications.models import Channel, Delivery, Destination, Kind
from controlplane.notifications.senders import apprise_url_is_valid
from controlplane.notifications.signing import new_secret

MAX_URL_LENGTH = 2000
MAX_NAME_LENGTH = 100


def _snapshot(destination: Destination) -> dict[str, Any]:
    return {
        "name": destination.name,
        "environment": destination.environment.key,
        "channel": destination.channel,
        "url": destination.url_display,
        "kinds": list(destination.kinds),
        "is_enabled": destination.is_enabled,
        "secret": destination.secret_prefix,
    }


def validate_name(name: Any) -> str:
    """Return the cleaned name; raise InvalidInput (field ``name``)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidInput(
            f"name: is required, at most {MAX_NAME_LENGTH} characters, no NUL",
            field="name",
        )
    return name


def validate_url(channel: str, url: Any) -> str:
    """Return the cleaned URL for ``channel``; raise InvalidInput (``url``)."""
    if channel not in Channel.values:
        raise InvalidInput(
            f"channel: must be one of {', '.join(Channel.values)}", field="channel"
        )
    url = url.strip() if isinstance(url, str) else ""
    if not url:
        raise InvalidInput("url: is required", field="url")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidInput(f"url: at most {MAX_URL_LENGTH} characters", field="url")
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        raise InvalidInput(
            "url: must not contain NUL or control characters", field="url"
        )
    if channel == Channel.WEBHOOK:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise InvalidInput("url: is not a valid URL", field="url") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput(
                "url: a webhook URL is http:// or https:// with a host", field="url"
            )
    elif not apprise_url_is_valid(url):
        raise InvalidInput(
            "url: apprise does not understand this URL (see apprise's URL list)",
            field="url",
        )
    return url


def validate_kinds(kinds: Any) -> list[str]:
    """Return the kinds in their canonical order; raise InvalidInput (``kinds``)."""
    if not isinstance(kinds, (list, tuple, set)) or not all(
        isinstance(kind, str) for kind in kinds
    ):
        raise InvalidInput("kinds: must be a list of kinds", field="kinds")
    unknown = sorted(set(kinds) - set(Kind.values))
    if unknown:
        raise InvalidInput(
            f"kinds: unknown {', '.join(unknown)[:200]}; known: "
            f"{', '.join(Kind.values)}",
            field="kinds",
        )
    return [kind for kind in Kind.values if kind in kinds]


def destination_create(
    *,
    actor: Any,
    name: str,
    environment: Any,
    channel: str,
    url: str,
    kinds: list[str],
    is_enabled: bool = True,
) -> tuple[Destination, str]:
    """Create a destination; return it and its webhook secret (shown once).

    The secret is "" for an apprise destination. Raises InvalidInput.
    """
    name = validate_name(name)
    url = validate_url(channel, url)
    kinds = validate_kinds(kinds)
    if environment is None:
        raise InvalidInput("environment: is required", field="environment")
    if Destination.objects.filter(environment=environment, name=name).exists():
        raise InvalidInput(
            f"name: {environment.key} already has a destination {name!r}",
            field="name",
        )
    secret = new_secret() if channel == Channel.WEBHOOK else ""
    with audited_transaction():
        destination = Destination.objects.create(
            name=name,
            environment=environment,
            channel=channel,
            url=url,
            secret=secret,
            kinds=kinds,
            is_enabled=bool(is_enabled),
        )
        record_audit_event(
            actor=actor,
            action="notification_destination.created",
            target=destination,
            environment=environment.key,
            after=_snapshot(destination),
        )
    return destination, secret


def destination_update(
    *,
    actor: Any,
    destination: Destination,
    name: str | None = None,
    url: str | None = None,
    kinds: list[str] | None = None,
    is_enabled: bool | None = None,
) -> Destination:
    """Change what is given; ``url`` None or "" keeps the stored one.

    The channel and environment are fixed (create another destination).
    Raises InvalidInput.
    """
    with audited_transaction():
        destination = (
            Destination.objects.select_for_update(of=("self",))
            .select_related("environment")
            .get(pk=destination.pk)
        )
        before = _snapshot(destination)
        if name is not None:
            destination.name = validate_name(name)
            clash = Destination.objects.filter(
                environment=destination.environment, name=destination.name
            ).exclude(pk=destination.pk)
            if clash.exists():
                raise InvalidInput(
                    f"name: {destination.environment.key} already has a "
                    f"destination {destination.name!r}",
                    field="name",
                )
        url_changed = bool(url) and url.strip() != destination.url
        if url:
            destination.url = validate_url(destination.channel, url)
        if kinds is not None:
            destination.kinds = validate_kinds(kinds)
        if is_enabled is not None:
            destination.is_enabled = bool(is_enabled)
        after = _snapshot(destination)
        if after == before and not url_changed:
            return destination
        destination.save()
        record_audit_event(
            actor=actor,
            action="notification_destination.updated",
            target=destination,
            environment=destination.environment.key,
            before=before,
            after=after,
            details={"url_changed": url_changed},
        )
    return destination


def destination_disable(*, actor: Any, destination: Destination) -> Destination:
    """Stop sending to ``destination`` (pending retries fail at their turn)."""
    return destination_update(actor=actor, destination=destination, is_enabled=False)


def destination_rotate_secret(*, actor: Any, destination: Destination) -> str:
    """Give a webhook destination a new secret; return it (shown once).

    Raises InvalidInput for an apprise destination (its tokens are its URL).
    """
    with audited_transaction():
        destination = (
            Destination.objects.select_for_update(of=("self",))
            .select_related("environment")
            .get(pk=destination.pk)
        )
        if destination.channel != Channel.WEBHOOK:
            raise InvalidInput(
                "channel: only a webhook has a secret; edit the apprise URL instead",
                field="channel",
            )
        before = _snapshot(destination)
        destination.secret = new_secret()
        destination.save(update_fields=["secret", "updated_at"])
        record_audit_event(
            actor=actor,
            action="notification_destination.secret_rotated",
            target=destination,
            environment=destination.environment.key,
            before=before,
            after=_snapshot(destination),
        )
    return destination.secret


def destination_send_test(*, actor: Any, destination: Destination) -> Delivery:
    """Queue a test notification to ``destination`` (sent after commit)."""
    who = as_actor(actor)
    with audited_transaction():
        destination = Destination.objects.select_related("environment").get(
            pk=destination.pk
        )
        notice = sample_notice(
            destination_name=destination.name,
            environment=destination.environment.key,
            actor=who.name,
        )
        event = record_audit_event(
            actor=who,
            action="notification_destination.tested",
            target=destination,
            environment=destination.environment.key,
        )
        (delivery,) = deliveries_create(
            destinations=[destination], notice=notice, event=event
        )
    return delivery
