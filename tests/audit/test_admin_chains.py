"""The chain status on the audit list: cached, verified on demand."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.urls import reverse

from controlplane.audit import admin as audit_admin
from controlplane.audit.actors import SYSTEM
from controlplane.audit.chain_status import audit_chain_status
from controlplane.audit.models import AuditEvent
from flags import services
from tests.audit.test_chain import raw_update_after, triggers_off

CHANGELIST = reverse("admin:audit_auditevent_changelist")
VERIFY = reverse("admin:audit_auditevent_verify_chains")


@pytest.fixture(autouse=True)
def _no_cached_chain_status():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def log(environments, flag_factory, production) -> list[AuditEvent]:
    """Events in two chains: global and env:production."""
    flag = flag_factory()
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=10
    )
    services.flag_update(actor=SYSTEM, flag=flag, name="renamed")
    return list(AuditEvent.objects.order_by("id"))


def _states(body: str) -> dict[str, str]:
    return dict(re.findall(r'data-chain="([^"]+)" data-state="([^"]+)"', body))


def test_chains__small_log_first_visit__verified_and_ok(admin_client, log):
    # When
    response = admin_client.get(CHANGELIST)
    # Then
    body = response.content.decode()
    assert _states(body) == {"env:production": "ok", "global": "ok"}
    assert "all 2 verify" in body and "Last verified" in body
    report = response.context["chain_status"]
    assert report.checked_at is not None
    assert sum(chain.events for chain in report.chains) == len(log)


def test_chains__large_log__not_verified_on_a_visit(admin_client, log, monkeypatch):
    # Given: a log larger than what a visit verifies
    monkeypatch.setattr(audit_admin, "AUTO_VERIFY_EVENTS", len(log) - 1)
    # When
    body = admin_client.get(CHANGELIST).content.decode()
    # Then
    assert set(_states(body).values()) == {"unchecked"}
    assert cache.get("controlplane.audit.chain_status") is None  # nothing ran
    assert 'id="audit-verify-now"' in body


def test_chains__verify_now__result_cached_with_its_time(
    admin_client, log, monkeypatch
):
    # Given
    monkeypatch.setattr(audit_admin, "AUTO_VERIFY_EVENTS", 0)
    # When
    response = admin_client.post(VERIFY, follow=True)
    # Then
    body = response.content.decode()
    assert response.redirect_chain == [(CHANGELIST, 302)]
    assert "Every audit chain verifies (2 chains, " in body
    assert _states(body) == {"env:production": "ok", "global": "ok"}
    assert re.search(
        r"Last verified <time class=\"when\"[^>]*>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", body
    )


def test_chains__events_after_the_check__counted_as_not_checked(
    admin_client, log, flag_factory
):
    # Given: verified, then two more global events
    admin_client.get(CHANGELIST)
    flag_factory()
    flag_factory()
    # When
    response = admin_client.get(CHANGELIST)
    # Then
    by_chain = {chain.chain: chain for chain in response.context["chain_status"].chains}
    assert by_chain["global"].unchecked == 2
    assert by_chain["env:production"].unchecked == 0
    assert "2 newer not checked" in response.content.decode()


def test_chains__tampered_event__broken_at_that_event(admin_client, log):
    # Given
    victim = next(e for e in log if e.chain == "env:production")
    with triggers_off():
        raw_update_after(victim.pk, {"tampered": True})
    # When
    response = admin_client.post(VERIFY, follow=True)
    # Then
    body = response.content.decode()
    assert f"Audit chain broken: env:production at event {victim.pk}" in body
    assert _states(body) == {"env:production": "broken", "global": "ok"}
    victim_url = reverse("admin:audit_auditevent_change", args=[victim.pk])
    assert f'broken at event <a href="{victim_url}">{victim.pk}</a>' in body
    assert "edited" in body  # the problem, as verify says it
    assert re.search(
        r'<details class="module audit-chains" id="audit-chains" open>', body
    )


def test_chains__verify_by_get__refused(admin_client, log):
    # When
    response = admin_client.get(VERIFY)
    # Then
    assert response.status_code == 405
    assert cache.get("controlplane.audit.chain_status") is None


def test_chains__staff_without_audit_permission__verify_refused(client, log):
    # Given
    user = User.objects.create_user("intern", password="pw", is_staff=True)
    client.force_login(user)
    # When
    response = client.post(VERIFY)
    # Then
    assert response.status_code == 403
    assert cache.get("controlplane.audit.chain_status") is None


def test_chains__anonymous__verify_goes_to_login(client, log):
    # When
    response = client.post(VERIFY)
    # Then
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_chain_status__nothing_cached_and_no_auto__every_chain_unchecked(log):
    # When
    report = audit_chain_status()
    # Then
    assert report.checked_at is None
    assert {(c.chain, c.state, c.unchecked) for c in report.chains} == {
        ("global", "unchecked", sum(e.chain == "global" for e in log)),
        ("env:production", "unchecked", sum(e.chain == "env:production" for e in log)),
    }


def test_chain_status__chain_link__lists_that_chains_events(admin_client, log):
    # When
    response = admin_client.get(CHANGELIST, {"chain": "env:production"})
    # Then
    assert response.status_code == 200
    assert {e.chain for e in response.context["cl"].result_list} == {"env:production"}


def test_chains__verify_now_from_a_filtered_list__back_to_that_list(admin_client, log):
    # Given
    page = admin_client.get(CHANGELIST, {"action": "flag.updated"})
    query = re.search(r'name="query" value="([^"]*)"', page.content.decode())[1]
    # When
    response = admin_client.post(VERIFY, {"query": query.replace("&amp;", "&")})
    # Then
    assert response.status_code == 302
    assert response["Location"] == f"{CHANGELIST}?action=flag.updated"


@pytest.mark.parametrize(
    "query", ["//evil.example/x", "https://evil.example/", "a=1\x00", "x" * 3000]
)
def test_chains__verify_now_odd_query__stays_on_the_list(admin_client, log, query):
    # When
    response = admin_client.post(VERIFY, {"query": query})
    # Then
    assert response.status_code == 302
    assert response["Location"].startswith(f"{CHANGELIST}?") or (
        response["Location"] == CHANGELIST
    )
    assert "evil.example/" not in response["Location"].split("?")[0]
