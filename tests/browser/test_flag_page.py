"""The flag page in a real browser: who gets what, kill, edit a rule, evaluate.

Everything is done through the pages, as an operator would, with no JSON
typed; what apps get is checked over real HTTP against the live server's
evaluation API with a server API key.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.request

import pytest
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from tests.apikeys.fixtures import serving_reset  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def demo(db, serving_reset):
    """Demo-like data: a 10% split, a rule, an override; staging off."""
    from controlplane.apikeys.services import apikey_create
    from flags import services
    from flags.models import Merchant

    production = services.environment_create(
        actor=SYSTEM, key="production", name="Production"
    )
    services.environment_create(
        actor=SYSTEM, key="staging", name="Staging", sort_order=1
    )
    for key, attributes in [
        ("m-1001", {"tier": "silver"}),
        ("m-2002", {"tier": "gold", "country": "KR"}),
        ("m-3003", {"tier": "silver", "country": "DE"}),
    ]:
        services.merchant_create(actor=SYSTEM, key=key, attributes=attributes)
    services.segment_create(
        actor=SYSTEM,
        key="korea",
        name="Korea",
        clauses=[{"attribute": "country", "op": "in", "values": ["KR"]}],
    )
    flag = services.flag_create(
        actor=SYSTEM,
        key="sequential_workflow",
        name="Sequential workflow",
        value_type="bool",
        description="Run policy steps one after another.",
    )
    services.flag_state_update(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        expected_version=None,
        enabled=True,
        rules=[
            {
                "clauses": [{"attribute": "", "op": "segment", "values": ["korea"]}],
                "serve": {"variation": "on"},
                "description": "pilot country",
            }
        ],
    )
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=10
    )
    services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=Merchant.objects.get(key="m-1001"),
        variation="on",
        note="pilot merchant",
        expires_at=timezone.now() + dt.timedelta(days=3, minutes=1),
    )
    _, secret = apikey_create(
        actor=SYSTEM, name="checkout", scope="server", environment=production
    )
    return {"flag": flag, "key": secret}


def _evaluate(base_url: str, key: str, merchant: str) -> dict:
    request = urllib.request.Request(
        base_url + "/api/v1/evaluate",
        data=json.dumps(
            {"context": {"merchant": merchant}, "flags": ["sequential_workflow"]}
        ).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["flags"][0]


def _answer_becomes(base_url: str, key: str, merchant: str, variation: str) -> dict:
    """Return the API's answer once it serves ``variation`` (poll interval)."""
    deadline = time.monotonic() + 10
    while True:
        answer = _evaluate(base_url, key, merchant)
        if answer["variation"] == variation or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def _flag_page(page, flag) -> None:
    page.get(f"/admin/flags/flag/{flag.pk}/change/")
    page.wait_for("#who-gets-what")


def _row(page, environment: str):
    return page.css(f"#who-gets-what tr[data-environment='{environment}']")


def test_flag_page__demo_data__says_who_gets_what_per_environment(
    page, admin_user, demo
):
    # Given
    page.login()
    # When
    _flag_page(page, demo["flag"])
    # Then
    production = _row(page, "production").text
    assert "m-1001 → on (override, expires in 3 days)" in production
    assert "rule 1 (in segment Korea) → on" in production
    assert "10.000% of merchants → on · everyone else → off" in production
    assert "staging: off · everyone → off" in _row(page, "staging").text
    widths = page.browser.execute_script(
        "return Array.from(document.querySelectorAll("
        "\"#who-gets-what tr[data-environment='production'] .bar-part\"))"
        ".map(p => p.getBoundingClientRect().width)"
    )
    assert len(widths) == 2 and widths[0] > 0
    assert abs(widths[0] / (widths[0] + widths[1]) - 0.10) < 0.01
    # and the evaluate form answers with reason and level
    page.css("input[name=evaluate_merchant]").send_keys("m-1001")
    page.css("#evaluate-here input[type=submit]").click()
    page.wait_for("#evaluation")
    assert page.css(".eval-variation").text == "on"
    assert page.css(".eval-reason").text == "TARGETING_MATCH"
    assert page.css(".eval-level").text == "override"
    page.browser.execute_script("window.scrollTo(0, 0)")
    page.shot("flag")


def test_flag_page__killed_in_the_ui__api_answers_off(
    page, admin_user, demo, live_server
):
    # Given: m-1001 gets on through its override
    assert _evaluate(live_server.url, demo["key"], "m-1001")["variation"] == "on"
    page.login()
    _flag_page(page, demo["flag"])
    # When: Kill… on production, a reason, and the confirmation accepted
    _row(page, "production").find_element("css selector", "input.danger").click()
    page.wait_for("input[name=reason]").send_keys("errors spiking")
    page.css("input[type=submit].danger").click()
    assert "off variation" in page.accept_confirm()
    page.wait_for("ul.messagelist")
    # Then
    answer = _answer_becomes(live_server.url, demo["key"], "m-1001", "off")
    assert (answer["variation"], answer["reason"]) == ("off", "DISABLED")
    _flag_page(page, demo["flag"])
    assert "production: killed (errors spiking) · everyone → off" in (
        _row(page, "production").text
    )


def test_flag_page__rule_added_in_the_form__merchant_answer_changes(
    page, admin_user, demo, live_server
):
    from selenium.webdriver.support.ui import Select

    # Given: m-3003 (silver, DE) is outside the 10% and gets off
    before = _evaluate(live_server.url, demo["key"], "m-3003")
    assert (before["variation"], before["level"]) == ("off", "default")
    page.login()
    _flag_page(page, demo["flag"])
    _row(page, "production").find_element("link text", "Edit targeting").click()
    page.wait_for("fieldset.rule-row")
    # When: a new rule "country is one of DE → on", typed in rows
    new = "targeting_rules-1"
    page.css(f"input[name='{new}-clause-0-attribute']").send_keys("country")
    Select(page.css(f"select[name='{new}-clause-0-op']")).select_by_visible_text(
        "is one of"
    )
    page.css(f"input[name='{new}-clause-0-values']").send_keys("DE, FR")
    page.css(f"input[name='{new}-serve-mode'][value='variation']").click()
    Select(page.css(f"select[name='{new}-serve-variation']")).select_by_value("on")
    page.css(f"input[name='{new}-description']").send_keys("Germany and France")
    segments = page.css(f"select[name='{new}-clause-0-segments']")
    assert not segments.is_displayed()  # "is one of" takes values, not segments
    Select(page.css(f"select[name='{new}-clause-0-op']")).select_by_value("segment")
    assert segments.is_displayed()
    Select(page.css(f"select[name='{new}-clause-0-op']")).select_by_value("in")
    page.css("input[name=_save]").click()
    page.wait_for("ul.messagelist")
    # Then: the API serves on through rule 2
    answer = _answer_becomes(live_server.url, demo["key"], "m-3003", "on")
    assert (answer["variation"], answer["level"]) == ("on", "rule:2")
    _flag_page(page, demo["flag"])
    assert "rule 2 (country is one of DE, FR) → on" in _row(page, "production").text
    page.css("input[name=evaluate_merchant]").send_keys("m-3003")
    page.css("#evaluate-here input[type=submit]").click()
    page.wait_for("#evaluation")
    assert page.css(".eval-level").text == "rule:2"


def test_flag_state_page__split_edited_in_percent__api_follows(
    page, admin_user, demo, live_server
):
    # Given
    from flags.models import FlagState

    state = FlagState.objects.get(flag=demo["flag"], environment__key="production")
    page.login()
    page.get(f"/admin/flags/flagstate/{state.pk}/change/")
    page.wait_for("input[name='targeting_default-arm-0-percent']")
    height = page.browser.execute_script("return document.body.scrollHeight")
    page.browser.set_window_size(1400, min(height + 120, 4000))
    try:
        page.shot("flag-targeting")
    finally:
        page.browser.set_window_size(1400, 1000)
    # When: 100.000% on, 0.000% off
    for name, value in [("0", "100.000"), ("1", "0")]:
        field = page.css(f"input[name='targeting_default-arm-{name}-percent']")
        field.clear()
        field.send_keys(value)
    page.css("input[name=_save]").click()
    page.wait_for("ul.messagelist")
    # Then
    state.refresh_from_db()
    assert state.fallthrough["split"][0] == {"variation": "on", "weight": 100000}
    answer = _answer_becomes(live_server.url, demo["key"], "m-3003", "on")
    assert (answer["variation"], answer["reason"]) == ("on", "SPLIT")
