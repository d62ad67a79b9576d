"""The console's shared look and the API docs, in a real browser, offline."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_anonymous_home_goes_to_login(page):
    page.get("/")
    page.wait_for("#login-form")
    assert "/admin/login/" in page.browser.current_url


def test_login_shows_the_home_page_with_the_console_stylesheet(page, admin_user):
    page.login()
    page.get("/")
    page.wait_for("#home-rollouts")
    sheets = page.browser.execute_script(
        "return Array.from(document.styleSheets).map(s => s.href || '')"
    )
    assert any(href.endswith("console/console.css") for href in sheets), sheets
    # The stylesheet is applied: a tone class gets its background.
    colour = page.browser.execute_script(
        "const s = document.createElement('span'); s.className = 'tone tone-bad';"
        "document.body.appendChild(s);"
        "return getComputedStyle(s).backgroundColor;"
    )
    assert colour == "rgb(251, 224, 224)"


def test_swagger_ui_renders_with_the_network_blocked(page, admin_user):
    page.login()
    page.get("/api/docs/")
    title = page.wait_for(".swagger-ui .info .title")
    assert title.text.strip()
    assert page.all(".opblock")  # the operations are listed


def test_redoc_renders_with_the_network_blocked(page, admin_user):
    page.login()
    page.get("/api/redoc/")
    heading = page.wait_for("h1")
    assert heading.text.strip()
    assert page.all("[data-section-id^='tag/'], [data-section-id^='operation/']")


def test_a_destructive_link_asks_before_it_goes(page, admin_user):
    page.login()
    page.get("/admin/")
    page.browser.execute_script(
        "const a = document.createElement('a'); a.id = 'cp-danger';"
        "a.href = '/admin/'; a.dataset.confirm = 'Really?';"
        "a.textContent = 'x'; document.body.appendChild(a);"
    )
    page.browser.execute_script("document.getElementById('cp-danger').click()")
    assert page.accept_confirm() == "Really?"
