"""The hot path answers the evaluation routes, not Django.

Also home of the fixtures the ``test_hotpath_*`` modules use to run the
evaluation endpoints' own test modules a second time through the hot path:

- ``client``: a Django test ``Client`` whose requests to the hot path's
  routes go through ``controlplane.wsgi.application`` (the combined
  application: hot path first, Django behind it); other paths go to
  Django's test handler as usual;
- ``live_server``: pytest-django's live server with the hot path in front
  of Django's handler.
"""

from __future__ import annotations

import json

import pytest
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_started
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from django.test.client import ClientHandler
from django.test.utils import CaptureQueriesContext

from flags.hotpath import make_app, route
from flags.hotpath.request import path_info
from tests.apikeys.fixtures import (  # noqa: F401
    auth,
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)


class HotPathHandler(ClientHandler):
    """The test client's handler, with the combined WSGI app for hot routes."""

    def __call__(self, environ):
        if route(path_info(environ)) is None:
            return super().__call__(environ)
        from controlplane.wsgi import application

        answered: dict = {}

        def start_response(status, headers, exc_info=None):
            answered["status"] = int(status.split(" ", 1)[0])
            answered["headers"] = headers

        chunks = application(environ, start_response)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        response = HttpResponse(body, status=answered["status"])
        del response["Content-Type"]
        for name, value in answered["headers"]:
            response[name] = value
        response.wsgi_request = WSGIRequest(environ)
        return response


class HotPathClient(Client):
    """A Django test client whose evaluation requests take the hot path."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handler = HotPathHandler(self.handler.enforce_csrf_checks)


@pytest.fixture
def client() -> HotPathClient:
    """The hot-path client (replaces pytest-django's ``client``)."""
    return HotPathClient()


@pytest.fixture
def live_server():
    """pytest-django's live server with the hot path in front of Django."""
    from django.contrib.staticfiles.handlers import StaticFilesHandler
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer("localhost", start=False)
    server.thread.static_handler = lambda app: make_app(
        fallback=StaticFilesHandler(app)
    )
    server.start()
    yield server
    server.stop()


# -- the hot path answered --------------------------------------------------------

BODY = json.dumps({"context": {"merchant": "m-gold"}, "flags": ["checkout_layout"]})


@pytest.fixture
def django_requests():
    """Count Django's request_started signals during the test."""
    seen: list[object] = []

    def started(sender, **kwargs):
        seen.append(sender)

    request_started.connect(started, dispatch_uid="hotpath-test-started")
    yield seen
    request_started.disconnect(dispatch_uid="hotpath-test-started")


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("post", "/api/v1/evaluate", BODY),
        ("post", "/ofrep/v1/evaluate/flags/checkout_layout", BODY),
        ("post", "/ofrep/v1/evaluate/flags", BODY),
        ("get", "/api/v1/environments/production/ruleset", None),
    ],
)
def test_hotpath__evaluation_routes__answered_without_django(
    client, catalog, auth, django_requests, method, path, body
):
    # When
    if body is None:
        response = client.get(path, **auth)
    else:
        response = client.post(path, data=body, content_type="application/json", **auth)
    # Then
    assert response.status_code == 200, response.content
    assert response["X-Served-By"] == "hotpath"
    assert django_requests == []
    for name in ("X-Content-Type-Options", "X-Frame-Options", "X-Request-ID"):
        assert response[name]
    assert int(response["Content-Length"]) == len(response.content)


def test_hotpath__other_path__answered_by_django(client, catalog, django_requests):
    # When
    response = client.get("/metrics")
    # Then
    assert response.status_code == 200
    assert "X-Served-By" not in response
    assert len(django_requests) == 1


def test_hotpath__warm_evaluation__zero_queries(client, catalog, auth, settings):
    # Given: no version check or key re-check due during the measured request
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "RULESET_POLL_INTERVAL": 3600,
        "RULESET_STALE_AFTER": 3600,
        "APIKEY_CACHE_TTL": 3600,
    }
    post = {"data": BODY, "content_type": "application/json", **auth}
    client.post("/api/v1/evaluate", **post)
    client.post("/ofrep/v1/evaluate/flags/checkout_layout", **post)
    # When
    with CaptureQueriesContext(connection) as queries:
        native = client.post("/api/v1/evaluate", **post)
        ofrep = client.post("/ofrep/v1/evaluate/flags/checkout_layout", **post)
    # Then
    assert (native.status_code, ofrep.status_code) == (200, 200)
    assert native["X-Served-By"] == ofrep["X-Served-By"] == "hotpath"
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_hotpath__same_request__same_status_body_and_headers_as_django(
    client, catalog, auth
):
    # Given
    django_client = Client()
    requests = [
        ("/api/v1/evaluate", BODY),
        ("/api/v1/evaluate", '{"context": {"merchant": 7}}'),
        ("/api/v1/evaluate", '{"flags": ["nope"]}'),
        ("/ofrep/v1/evaluate/flags/checkout_theme", '{"context": {}}'),
        ("/ofrep/v1/evaluate/flags", BODY),
        ("/ofrep/v1/evaluate/flags/x", "{oops"),
        ("/ofrep/v1/evaluate/flags", '{"context": "x"}'),
    ]
    for path, body in requests:
        # When
        hot = client.post(path, data=body, content_type="application/json", **auth)
        plain = django_client.post(
            path, data=body, content_type="application/json", **auth
        )
        # Then
        assert hot.status_code == plain.status_code, path
        assert json.loads(hot.content) == json.loads(plain.content), path
        made_up = {"X-Served-By", "X-Request-ID"}
        assert {k: v for k, v in hot.headers.items() if k not in made_up} == {
            k: v for k, v in plain.headers.items() if k not in made_up
        }, path


def test_hotpath__unencoded_path_key__decoded_as_django_does(client, catalog, auth):
    # When: a flag key with non-ASCII text and a slash, sent percent-encoded
    response = client.post(
        "/ofrep/v1/evaluate/flags/caf%C3%A9/x",
        data=BODY,
        content_type="application/json",
        **auth,
    )
    # Then
    assert response.status_code == 404
    assert response.json()["key"] == "café/x"


def test_hotpath__answers__counted_by_route_and_status(client, catalog, auth):
    # Given
    from prometheus_client import REGISTRY

    def count(route: str, status: str) -> float:
        return (
            REGISTRY.get_sample_value(
                "controlplane_flags_hotpath_requests_total",
                {"route": route, "status": status},
            )
            or 0.0
        )

    before = (count("evaluate", "200"), count("ofrep_flag", "404"))
    # When
    client.post("/api/v1/evaluate", data=BODY, content_type="application/json", **auth)
    client.post(
        "/ofrep/v1/evaluate/flags/nope",
        data=BODY,
        content_type="application/json",
        **auth,
    )
    # Then
    after = (count("evaluate", "200"), count("ofrep_flag", "404"))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


@pytest.mark.parametrize(
    "path, extra",
    [
        ("/api/v1/evaluate?environment=a%00b", {}),
        ("/ofrep/v1/evaluate/flags?x=%ff", {}),
        ("/api/v1/evaluate", {"HTTP_HOST": "evil.example"}),
        ("/api/v1/evaluate", {"HTTP_X_REQUEST_ID": "req-42"}),
    ],
)
def test_hotpath__host_query_and_request_id__as_django_middleware(
    client, catalog, auth, path, extra
):
    # When
    hot = client.post(path, data=BODY, content_type="application/json", **auth, **extra)
    plain = Client().post(
        path, data=BODY, content_type="application/json", **auth, **extra
    )
    # Then
    assert hot["X-Served-By"] == "hotpath"
    assert (hot.status_code, hot["Content-Type"]) == (
        plain.status_code,
        plain["Content-Type"],
    )
    if "HTTP_HOST" not in extra:  # Django's 400 page depends on DEBUG
        assert hot.content == plain.content or (
            json.loads(hot.content) == json.loads(plain.content)
        )
    if "HTTP_X_REQUEST_ID" in extra:
        assert hot["X-Request-ID"] == plain["X-Request-ID"] == "req-42"
