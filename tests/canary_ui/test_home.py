"""The home page at ``/``: active rollouts, decisions, kills, rollback runs."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from canary import services
from controlplane.audit.actors import CONTROLLER, SYSTEM
from flags import services as flag_services


def test_home__anonymous__redirected_to_login(client, db):
    # When
    response = client.get("/")
    # Then
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert "next=/" in response["Location"]


@pytest.fixture
def staff_client(client, django_user_model):
    user = django_user_model.objects.create_superuser("ops", password="pw-ops-12345")
    client.force_login(user)
    return client


def test_home__nothing_happening__says_so(staff_client):
    # When
    response = staff_client.get("/")
    # Then
    html = response.content.decode()
    assert response.status_code == 200
    assert "No rollout is running." in html
    assert "No flag is killed." in html
    assert "No rollback is running." in html


def test_home__running_rollout_and_kill__shown_with_phase_health_and_decision(
    staff_client, production, flag_factory, merchant_factory
):
    # Given: a started rollout (phase 1 of 4, numbered from 1), a killed
    # flag and a controller decision in the audit log
    flag = flag_factory("home_flag")
    merchant_factory("m-home")
    rollout = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["m-home"],
    )
    services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    services.rollout_pause(
        rollout_id=rollout.pk, actor=CONTROLLER, reason="automatic pause: test"
    )
    killed = flag_factory("home_killed")
    flag_services.flag_state_kill(
        actor=SYSTEM, flag=killed, environment=production, reason="broken CSS"
    )
    # When
    response = staff_client.get("/")
    # Then
    html = response.content.decode()
    section = html.split('id="home-rollouts"')[1].split("</section>")[0]
    assert rollout.name in section and "1/4 pilot" in section
    assert "Paused" in section and "tone-warn" in section
    assert "error_rate: no run yet" in section
    decisions = html.split('id="home-decisions"')[1].split("</section>")[0]
    assert "automatic pause: test" in decisions
    kills = html.split('id="home-killed"')[1].split("</section>")[0]
    assert "home_killed" in kills and "broken CSS" in kills


def test_home__more_rows__same_query_count(staff_client, production, flag_factory):
    # Given
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get("/").status_code == 200
        return len(captured)

    flag_services.flag_state_kill(
        actor=SYSTEM, flag=flag_factory("k0"), environment=production, reason="r"
    )
    one = queries()
    for i in range(1, 6):
        flag_services.flag_state_kill(
            actor=SYSTEM,
            flag=flag_factory(f"k{i}"),
            environment=production,
            reason="r",
        )
    # When / Then
    assert queries() == one
