"""Alert triggers and the stale filter in the admin, in a real browser, offline."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from controlplane.audit.actors import SYSTEM

pytestmark = pytest.mark.slow


@pytest.fixture
def checkout_theme(environments, flag_factory):
    from flags import services

    flag = flag_factory("checkout_theme")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=environments["production"], enabled=True
    )
    return flag


def test_trigger_admin__create_shows_url_once__call_kills__revoke(
    page, admin_user, checkout_theme, live_server
):
    from selenium.webdriver.support.ui import Select

    from flags.models import FlagState

    # Given
    page.login()
    page.get("/admin/flags/alerttrigger/add/")
    page.wait_for("#id_name").send_keys("alertmanager")
    Select(page.css("#id_flag")).select_by_visible_text("checkout_theme")
    Select(page.css("#id_environment")).select_by_visible_text("production")
    page.css("#id_can_restore").click()
    # When
    page.css("input[name=_save]").click()
    message = page.wait_for(".messagelist .warning").text
    page.shot("trigger-created")
    # Then
    url = re.search(r"http://\S+/api/v1/triggers/\d+/cp_trg_\S+/", message).group(0)
    assert url.startswith(live_server.url)
    request = urllib.request.Request(
        url,
        data=json.dumps({"version": "4", "status": "firing", "alerts": []}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.load(response)["result"] == "killed"
    assert FlagState.objects.get(
        flag=checkout_theme, environment__key="production"
    ).killed_at
    # When: the list, then revoke
    page.get("/admin/flags/alerttrigger/")
    page.wait_for("#result_list")
    assert url.rsplit("/", 2)[1] not in page.browser.page_source
    page.css("#result_list input.action-select").click()
    Select(page.css("select[name=action]")).select_by_value("revoke_triggers")
    page.css("button[name=index]").click()
    page.wait_for(".messagelist .info")
    page.shot("trigger-revoked")
    # Then
    assert "1 trigger(s) revoked." in page.css(".messagelist").text


def test_flag_admin__stale_filter__lists_the_unused_flag(
    page, admin_user, checkout_theme, flag_factory
):
    import datetime as dt

    from django.utils import timezone

    from flags.models import Flag, FlagState

    # Given: checkout_theme is 40 days old and never evaluated (timestamps
    # set directly: they are auto_now), a second flag was created today
    old = timezone.now() - dt.timedelta(days=40)
    Flag.objects.filter(pk=checkout_theme.pk).update(created_at=old)
    FlagState.objects.filter(flag=checkout_theme).update(updated_at=old)
    flag_factory("brand_new")
    # When
    page.login()
    page.get("/admin/flags/flag/?stale_days=30")
    page.wait_for("#result_list")
    page.shot("flags-stale-filter")
    # Then
    rows = [row.text for row in page.all("#result_list tbody tr")]
    assert len(rows) == 1 and "checkout_theme" in rows[0]
    assert "stale for" in page.css("#changelist-filter").text.lower()
