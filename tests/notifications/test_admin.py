"""The admin: create with the secret shown once, write-only URLs, test action."""

from __future__ import annotations

import re

import pytest

from controlplane.notifications.models import Delivery, DeliveryStatus, Destination

ADD = "/admin/notifications/destination/add/"


def _form(production, **changes):
    data = {
        "name": "ops hook",
        "environment": str(production.pk),
        "channel": "webhook",
        "url": "https://hooks.example.com/cp?token=abc",
        "kinds": ["flag_killed", "rollout_paused"],
        "is_enabled": "on",
    }
    data.update(changes)
    return data


def test_add__webhook__created_secret_shown_once_never_again(admin_client, production):
    # Given / When
    response = admin_client.post(ADD, _form(production), follow=True)
    # Then
    assert response.status_code == 200
    destination = Destination.objects.get()
    page = response.content.decode()
    assert destination.secret in page  # the one time it is shown
    change = admin_client.get(
        f"/admin/notifications/destination/{destination.pk}/change/"
    ).content.decode()
    assert destination.secret not in change
    assert f"set ({destination.secret[:6]}…)" in change
    assert "token=abc" not in change
    listing = admin_client.get("/admin/notifications/destination/").content.decode()
    assert destination.secret not in listing and "token=abc" not in listing


def test_change__apprise_url_blank__kept_never_shown(admin_client, production):
    # Given
    admin_client.post(
        ADD, _form(production, channel="apprise", url="slack://TokA/TokB/TokC/#ops")
    )
    destination = Destination.objects.get()
    url = f"/admin/notifications/destination/{destination.pk}/change/"
    assert "TokA" not in admin_client.get(url).content.decode()
    # When
    response = admin_client.post(
        url, _form(production, channel="apprise", url="", kinds=["flag_restored"])
    )
    # Then
    assert response.status_code == 302
    destination.refresh_from_db()
    assert destination.url == "slack://TokA/TokB/TokC/#ops"
    assert destination.kinds == ["flag_restored"]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"url": "ftp://example.com/x"}, "http:// or https://"),
        ({"url": "https://exa\x00mple.com/"}, "Null characters are not allowed"),
        ({"url": "https://example.com/" + "a" * 5000}, "at most 2000"),
        ({"channel": "apprise", "url": "nosuchscheme://x"}, "apprise does not"),
        ({"kinds": ["rollout_exploded"]}, "Select a valid choice"),
        ({"name": "n" * 500}, "at most 100"),
    ],
)
def test_add__bad_input__field_error_not_500(
    admin_client, production, changes, fragment
):
    # Given / When
    response = admin_client.post(ADD, _form(production, **changes))
    # Then
    assert response.status_code == 200
    page = response.content.decode()
    assert "errorlist" in page
    assert fragment in page
    assert Destination.objects.count() == 0


def test_send_test_action__live_receiver__delivered_and_listed(
    admin_client, production, receiver, django_capture_on_commit_callbacks
):
    # Given
    admin_client.post(ADD, _form(production, url=receiver.url + "/t"))
    destination = Destination.objects.get()
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/notifications/destination/",
            {"action": "send_test", "_selected_action": [str(destination.pk)]},
            follow=True,
        )
    # Then
    assert response.status_code == 200
    (request,) = receiver.received
    assert request.json()["kind"] == "test"
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED
    listing = admin_client.get("/admin/notifications/delivery/").content.decode()
    assert re.search(r'style="color:#1e7e34">Delivered<', listing)
    detail = admin_client.get(
        f"/admin/notifications/delivery/{delivery.pk}/change/"
    ).content.decode()
    assert "attempt" in detail.lower() and ">200<" in detail


def test_rotate_secret_action__new_secret_shown_once(admin_client, production):
    # Given
    admin_client.post(ADD, _form(production))
    destination = Destination.objects.get()
    old = destination.secret
    # When
    response = admin_client.post(
        "/admin/notifications/destination/",
        {"action": "rotate_secret", "_selected_action": [str(destination.pk)]},
        follow=True,
    )
    # Then
    destination.refresh_from_db()
    assert destination.secret != old
    assert destination.secret in response.content.decode()
