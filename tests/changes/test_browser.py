"""The change-request and scheduled-change admin pages in a real browser."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from flags import selectors
from flags.changes import services
from flags.changes.models import ChangeRequest
from tests.browser.conftest import admin_user, driver, page  # noqa: F401

pytestmark = pytest.mark.slow


def test_change_request_page__approve_button__applies(
    page, admin_user, flag, production, alice
):
    # Given: alice asks; the admin reviews
    services.approval_policy_set(actor=alice, environment=production, flag_state=1)
    change = services.change_request_create(
        actor=alice,
        operation="flag_state.percentage",
        arguments={
            "flag": "checkout_theme",
            "environment": "production",
            "percentage": 10,
        },
        reason="first step",
    )
    page.login()
    # When
    page.get(f"/admin/changes/changerequest/{change.pk}/change/")
    page.wait_for(".change-action")
    page.shot("change-request")
    page.browser.execute_script(
        "Array.from(document.querySelectorAll('.change-action'))"
        ".find(a => a.textContent === 'Approve').click()"
    )
    page.wait_for("textarea[name=comment]").send_keys("looks right")
    page.shot("change-request-approve")
    page.css("input[type=submit]").click()
    page.wait_for(".messagelist")
    # Then
    assert "applied" in page.css(".messagelist").text
    assert ChangeRequest.objects.get(pk=change.pk).status == "applied"
    state = selectors.flag_state_get(flag=flag, environment=production)
    assert state.fallthrough["split"][0]["weight"] == 10_000
    page.get("/admin/changes/changerequest/")
    page.wait_for("#result_list")
    page.shot("change-requests")
    assert page.css("#result_list .tone-ok").text == "applied"
    page.browser.get("about:blank")  # no request left in flight after the test


def test_scheduled_changes_list__cancel_asks_first(page, admin_user, flag, alice):
    # Given
    change = services.scheduled_change_create(
        actor=alice,
        operation="flag_state.kill",
        arguments={"flag": "checkout_theme", "environment": "production"},
        run_at=timezone.now() + dt.timedelta(hours=2),
        reason="maintenance window",
    )
    page.login()
    page.get("/admin/changes/scheduledchange/")
    page.wait_for("#result_list")
    page.shot("scheduled-changes")
    # When
    page.get(f"/admin/changes/scheduledchange/{change.pk}/cancel/")
    page.wait_for("input[type=submit]").click()
    message = page.accept_confirm()
    page.wait_for(".messagelist")
    # Then
    assert message == "Cancel?"
    change.refresh_from_db()
    assert change.status == "cancelled"
    page.browser.get("about:blank")  # no request left in flight after the test
