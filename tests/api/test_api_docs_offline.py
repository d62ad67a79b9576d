"""The API docs pages work without internet: every asset is served here."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.core.management.base import CommandError

ASSET = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_api_docs_page__assets__local_static_files(client, path):
    # When
    response = client.get(path)
    # Then: nothing from another host, and every asset is a static file
    # this server has
    assert response.status_code == 200
    html = response.content.decode()
    assets = [a for a in ASSET.findall(html) if not a.startswith("#")]
    assert assets, html
    assert not [a for a in assets if "//" in a], assets
    static = [a for a in assets if a.startswith("/static/")]
    assert any(a.endswith(".js") for a in static), assets
    for asset in static:
        assert finders.find(asset.removeprefix("/static/")), asset


def test_api_docs_page__script__served_by_the_dev_server(client, settings):
    # Given: the dev server serves static files (DEBUG, staticfiles)
    settings.DEBUG = True
    html = client.get("/api/docs/").content.decode()
    script = next(a for a in ASSET.findall(html) if a.endswith(".js"))
    # When
    from django.contrib.staticfiles.views import serve

    response = serve(
        __import__("django.test").test.RequestFactory().get(script),
        script.removeprefix("/static/"),
    )
    # Then
    assert response.status_code == 200
    assert b"".join(response.streaming_content)


@pytest.mark.django_db
def test_apikey_create__unknown_user__says_how_to_make_one():
    # When / Then
    with pytest.raises(CommandError, match="createsuperuser"):
        call_command(
            "apikey",
            "create",
            "--scope",
            "management",
            "--user",
            "nobody",
            "--name",
            "ci",
        )
