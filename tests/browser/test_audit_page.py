"""The audit log in a real browser: what changed, the target, filters, chains."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from controlplane.audit.actors import SYSTEM
from flags import services

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_cached_chain_status():
    cache.clear()
    yield
    cache.clear()


def _rename_in_the_admin(page, flag, name: str) -> None:
    page.get(f"/admin/flags/flag/{flag.pk}/change/")
    field = page.wait_for("#id_name")
    field.clear()
    field.send_keys(name)
    page.css("input[name=_save]").click()
    page.wait_for(".messagelist")


def test_audit_event__flag_renamed_in_the_admin__shows_name_before_after(
    page, admin_user, environments, flag_factory
):
    # Given
    flag = flag_factory(name="Checkout theme")
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=environments["production"], percentage=10
    )
    page.login()
    _rename_in_the_admin(page, flag, "Checkout theme v2")
    # When: from the flag's audit history to its newest event
    page.get(f"/admin/flags/flag/{flag.pk}/change/")
    page.wait_for("a.historylink")
    page.browser.execute_script(
        "Array.from(document.querySelectorAll('a.historylink'))"
        ".find(a => a.textContent.includes('audit')).click()"
    )
    page.wait_for("#audit-target")
    page.shot("audit-history")
    page.all("#result_list tbody tr th a")[0].click()
    page.wait_for("#audit-changes")
    # Then
    rows = {
        row.find_element("css selector", "th").text: (
            row.find_element("css selector", "td.diff-before").text,
            row.find_element("css selector", "td.diff-after").text,
        )
        for row in page.all("#audit-changes tbody tr")
    }
    assert rows["name"] == ("Checkout theme", "Checkout theme v2")
    assert "description" not in rows  # unchanged fields are hidden
    assert page.css("#audit-changes").text.count("→") == len(rows)
    target = page.css(".field-target a")
    assert target.get_attribute("href").endswith(f"/admin/flags/flag/{flag.pk}/change/")
    # the raw JSON is there, collapsed
    raw = page.browser.execute_script(
        "const d = Array.from(document.querySelectorAll('details'))"
        ".find(d => d.textContent.includes('Raw JSON'));"
        "return d ? [d.open, d.querySelector('pre.audit-json') !== null] : null"
    )
    assert raw == [False, True]
    assert not page.all("input[name=_save]")  # read-only: nothing to save
    page.shot("audit-event")


def test_audit_list__filter_by_action__only_that_action(
    page, admin_user, environments, flag_factory
):
    # Given
    flag = flag_factory()
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=environments["production"], percentage=10
    )
    services.flag_update(actor=SYSTEM, flag=flag, name="renamed")
    page.login()
    page.get("/admin/audit/auditevent/")
    page.wait_for("#audit-chains")
    page.shot("audit-list")
    # When
    filters = page.css("#changelist-filter details[data-filter-title='action']")
    filters.find_element("link text", "flag.updated").click()
    page.wait_for("#result_list")
    # Then
    actions = [cell.text for cell in page.all("#result_list td.field-action_label")]
    assert actions == ["flag.updated"]
    assert "action=flag.updated" in page.browser.current_url


def test_audit_list__chains_verified__ok_then_verify_now(
    page, admin_user, environments, flag_factory
):
    # Given: a small log, verified on the first visit
    flag = flag_factory()
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=environments["production"], percentage=10
    )
    page.login()
    # When
    page.get("/admin/audit/auditevent/")
    summary = page.wait_for("#audit-chains > summary")
    # Then: one line while every chain verifies; the table when opened
    assert "all 2 verify" in summary.text
    assert page.css("#audit-chains").get_attribute("open") is None
    summary.click()
    states = {
        row.get_attribute("data-chain"): row.find_element("css selector", ".tone").text
        for row in page.all("#audit-chains tbody tr")
    }
    assert states == {"env:production": "OK", "global": "OK"}
    # When: verified again on demand
    page.css("#audit-verify-now").click()
    # Then
    message = page.wait_for(".messagelist .success")
    assert "Every audit chain verifies" in message.text
