"""503 with Retry-After, not 500, for a database failure in the management API
and the admin (the frozen-database test shows it end to end)."""

from __future__ import annotations

import json

import pytest
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.test import RequestFactory

from controlplane.api.exception_handler import api_exception_handler
from controlplane.exceptions import DatabaseUnavailable
from controlplane.unavailable import DatabaseUnavailableMiddleware


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("connection timeout expired"),
        InterfaceError("connection already closed"),
        DatabaseUnavailable("the API key cannot be checked now"),
    ],
)
def test_api_exception_handler__database_error__native_503_retry_after(exc, settings):
    # Given
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "DATABASE_RETRY_AFTER": 7}
    # When
    response = api_exception_handler(exc, {})
    # Then
    assert response.status_code == 503
    assert response.data["code"] == "database_unavailable"
    assert response.data["errors"] == {}
    assert response["Retry-After"] == "7"


def test_api_exception_handler__other_error__left_to_django():
    # Given / When
    response = api_exception_handler(ValueError("a bug"), {})
    # Then: still a 500 (logged), not disguised as an outage
    assert response is None


def raising_view(request):
    raise OperationalError("the database server did not answer within 20 s")


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/admin/flags/flag/", "text/html"), ("/api/v1/flags", "application/json")],
)
def test_middleware__view_database_error__503_retry_after(path, content_type):
    # Given
    middleware = DatabaseUnavailableMiddleware(lambda request: HttpResponse())
    request = RequestFactory().get(path)
    # When
    try:
        raising_view(request)
    except OperationalError as exc:
        response = middleware.process_exception(request, exc)
    # Then
    assert response.status_code == 503
    assert response["Content-Type"].startswith(content_type)
    assert int(response["Retry-After"]) > 0
    if content_type == "application/json":
        body = json.loads(response.content)
        assert (body["code"], body["errors"]) == ("database_unavailable", {})
    else:
        assert b"Service unavailable" in response.content


def test_middleware__other_error__not_handled():
    # Given
    middleware = DatabaseUnavailableMiddleware(lambda request: HttpResponse())
    # When
    response = middleware.process_exception(
        RequestFactory().get("/admin/"), ValueError("a bug")
    )
    # Then
    assert response is None
