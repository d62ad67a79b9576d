"""Release admin over the Django test client: the list, a release's page
(members, estimates, rolled back, audit), the buttons and the add page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from canary.models import Release, ReleaseStatus, Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags.changes import services as change_services
from flags.changes.models import ChangeRequest
from tests.release_fixtures import (  # noqa: F401 (fixtures)
    CHECK,
    COMPARE_CHECK,
    KEYS,
    release_complete,
    release_factory,
    release_flags,
    release_partly_rolled_back,
)

LIST_URL = "/admin/canary/release/"


@pytest.fixture
def admin_client(db) -> Client:
    User.objects.create_superuser("boss", password="x")
    client = Client()
    client.login(username="boss", password="x")
    return client


def page_url(release: Release) -> str:
    return f"/admin/canary/release/{release.pk}/change/"


def action_url(release: Release, action: str) -> str:
    return f"/admin/canary/release/{release.pk}/do/{action}/"


def test_release_list__releases__statuses_in_tone_and_counts(
    admin_client, release_factory
):
    # Given
    release_factory(name="draft one")
    release_complete(release_factory(name="done one", started=True))
    # When
    response = admin_client.get(LIST_URL)
    # Then
    html = response.content.decode()
    assert response.status_code == 200
    assert "draft one" in html and "done one" in html
    assert 'class="tone tone-ok">completed<' in html
    assert 'class="tone tone-neutral">draft<' in html


def test_release_list__more_releases__constant_query_count(
    admin_client, release_factory
):
    # Given
    release_factory(name="one")
    admin_client.get(LIST_URL)  # warm the session and content types
    with CaptureQueriesContext(connection) as few:
        admin_client.get(LIST_URL)
    for i in range(4):
        release_factory(name=f"more {i}")
    # When
    with CaptureQueriesContext(connection) as many:
        response = admin_client.get(LIST_URL)
    # Then
    assert response.status_code == 200
    assert len(many) == len(few)


def test_release_page__draft__members_start_and_abort_buttons(
    admin_client, release_factory
):
    # Given
    release = release_factory()
    # When
    response = admin_client.get(page_url(release))
    # Then
    html = response.content.decode()
    assert response.status_code == 200
    assert 'id="release-members"' in html or "id='release-members'" in html
    for member in Rollout.objects.filter(release=release):
        assert f"/admin/canary/rollout/{member.pk}/change/" in html
        assert f"/admin/flags/flag/{member.flag_id}/change/" in html
    assert "phase 1 of 3 (pilot)" in html
    assert action_url(release, "start") in html
    assert (
        f'href="{action_url(release, "abort")}" class="release-action button danger"'
        in html
    )
    assert action_url(release, "pause") not in html
    assert "none yet (no compare check has measured)" in html


def test_release_page__completed_with_partial_rollback__tables_and_audit(
    admin_client, release_factory
):
    # Given
    release = release_partly_rolled_back(
        release_factory(started=True, checks=[CHECK, COMPARE_CHECK])
    )
    # When
    response = admin_client.get(page_url(release))
    # Then
    html = response.content.decode()
    assert response.status_code == 200
    assert release.status == ReleaseStatus.COMPLETED
    assert "release-estimates" in html
    assert '<span class="tone tone-bad">worse</span>' in html
    assert '<span class="tone tone-ok">not worse</span>' in html
    assert "+9.00 pp <small>[+5.00 pp, +13.00 pp]</small>" in html
    assert "release-rolled-back" in html
    assert "error_rate_vs_control worse (+0.09)" in html
    assert '<span class="tone tone-warn">partial</span>' in html
    for action in ("release.created", "release.started", "release.completed"):
        assert action in html
    assert "release.partially_rolled_back" in html
    assert "/do/" not in html  # a finished release has no buttons


def test_rollout_page__member__links_back_to_release(admin_client, release_factory):
    # Given
    release = release_factory()
    member = Rollout.objects.filter(release=release).first()
    # When
    response = admin_client.get(f"/admin/canary/rollout/{member.pk}/change/")
    # Then
    assert response.status_code == 200
    assert page_url(release) in response.content.decode()


def test_release_start_button__confirmed__running_and_audited(
    admin_client, release_factory
):
    # Given
    release = release_factory()
    confirm = admin_client.get(action_url(release, "start"))
    # When
    response = admin_client.post(action_url(release, "start"), {"reason": "go"})
    # Then
    assert confirm.status_code == 200
    assert response.status_code == 302
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING
    started = AuditEvent.objects.get(
        action="release.started", target_id=str(release.pk)
    )
    assert started.actor_name == "boss"


def test_release_start_button__policy__change_request_not_started(
    admin_client, release_factory, production
):
    # Given
    change_services.approval_policy_set(
        actor=SYSTEM, environment=production, rollout_start=1
    )
    release = release_factory()
    # When
    response = admin_client.post(
        action_url(release, "start"), {"reason": "go"}, follow=True
    )
    # Then
    assert "needs 1 approval(s)" in response.content.decode()
    assert ChangeRequest.objects.get().operation == "release.start"
    release.refresh_from_db()
    assert release.status == ReleaseStatus.DRAFT


def test_release_abort_button__confirmation_page__danger_and_data_confirm(
    admin_client, release_factory
):
    # Given
    release = release_factory(started=True)
    # When
    page = admin_client.get(action_url(release, "abort"))
    missing = admin_client.post(action_url(release, "abort"), {"reason": ""})
    done = admin_client.post(action_url(release, "abort"), {"reason": "stop"})
    # Then
    html = page.content.decode()
    assert 'class="default danger"' in html and "data-confirm=" in html
    assert missing.status_code == 200  # the form asks for a reason
    assert done.status_code == 302
    release.refresh_from_db()
    assert release.status == ReleaseStatus.ABORTED
    assert set(
        Rollout.objects.filter(release=release).values_list("status", flat=True)
    ) == {RolloutStatus.ABORTED}


def test_release_start_button__aborted__refused_message(admin_client, release_factory):
    # Given
    release = release_factory()
    admin_client.post(action_url(release, "abort"), {"reason": "no"})
    # When
    response = admin_client.post(action_url(release, "start"), {}, follow=True)
    # Then
    assert (
        f"Start refused: release {release.pk} is aborted" in response.content.decode()
    )


def test_release_add__two_flags_and_plan__draft_created(admin_client, release_flags):
    # Given
    form = admin_client.get("/admin/canary/release/add/")
    # When
    response = admin_client.post(
        "/admin/canary/release/add/",
        {
            "name": "bundle",
            "environment": "production",
            "flags": KEYS,
            "template": "pilot-10-50-100",
            "pilot_merchants": "m-1001, m-1002",
            "duration_scale": "0.01",
        },
    )
    # Then
    assert form.status_code == 200 and "<select" in form.content.decode()
    release = Release.objects.get()
    assert response.status_code == 302
    assert response["Location"] == page_url(release)
    members = Rollout.objects.filter(release=release)
    assert members.count() == 2
    assert members.first().phases.get(index=0).pilot_merchants == ["m-1001", "m-1002"]


def test_release_add__one_flag__form_error_nothing_created(admin_client, release_flags):
    # Given / When
    response = admin_client.post(
        "/admin/canary/release/add/",
        {
            "environment": "production",
            "flags": [KEYS[0]],
            "template": "pilot-10-50-100",
            "pilot_merchants": "m-1001",
        },
    )
    # Then
    assert response.status_code == 200
    assert "at least two flags" in response.content.decode()
    assert Release.objects.count() == 0
