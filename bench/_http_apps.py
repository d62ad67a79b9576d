"""The WSGI application every server of ``bench/http_eval.py`` serves.

One application per server process, so every row of a server comes from
the same processes in the same run:

- ``/bench/raw``: a raw WSGI callable answering a constant JSON (the
  ceiling of the server itself);
- ``/bench/bare``: a bare Django view answering the same constant through
  Django's whole request cycle (the project's middleware);
- ``/bench/django/<path>``: ``<path>`` answered by Django's views alone,
  without the hot path (what the evaluation endpoints cost before it);
- anything else: the project's production entry point,
  ``controlplane.wsgi.application`` (the hot path, then Django).

``gunicorn bench._http_apps:application`` / ``granian --interface wsgi
bench._http_apps:application``. Importing this module sets Django up.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

from controlplane import wsgi  # noqa: E402  (sets Django up)

RAW_BODY = b'{"ok":true}'
_RAW_HEADERS = [
    ("Content-Type", "application/json"),
    ("Content-Length", str(len(RAW_BODY))),
]
DJANGO_PREFIX = "/bench/django"


def raw(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer a constant JSON: no framework, no work."""
    start_response("200 OK", _RAW_HEADERS)
    return [RAW_BODY]


def bare(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(RAW_BODY, content_type="application/json")


bare.csrf_exempt = True  # what csrf_exempt does; POST like the real endpoints


def __getattr__(name: str) -> Any:
    # The bench URLconf (ROOT_URLCONF of the Django app below): /bench/bare
    # first, then the project's own URLs.
    if name == "urlpatterns":
        from django.urls import include, path

        patterns = [path("bench/bare", bare), path("", include("controlplane.urls"))]
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(name)


def _use_bench_urls() -> None:
    from django.conf import settings

    settings.ROOT_URLCONF = "bench._http_apps"


_use_bench_urls()


def application(environ: dict[str, Any], start_response: Any) -> Any:
    """Route to the raw callable, Django alone, or the production app."""
    path = environ.get("PATH_INFO", "")
    if path.startswith("/bench/"):
        if path == "/bench/raw":
            return raw(environ, start_response)
        if path.startswith(DJANGO_PREFIX + "/"):
            environ["PATH_INFO"] = path[len(DJANGO_PREFIX) :]
        return wsgi.django_application(environ, start_response)
    return wsgi.application(environ, start_response)


# -- queries run by request threads (the figure "queries per evaluation") ------

_BACKGROUND_THREADS = frozenset({"ruleset-store", "apikey-cache", "metrics-flush"})


def _count_request_queries() -> None:
    import threading

    from django.db.backends.signals import connection_created
    from prometheus_client import Counter

    queries = Counter(
        "bench_request_queries_total",
        "SQL statements run by request threads (not the serving threads).",
    )

    def counted(execute, sql, params, many, context):
        if threading.current_thread().name not in _BACKGROUND_THREADS:
            queries.inc()
        return execute(sql, params, many, context)

    def install(sender, connection, **kwargs):
        if counted not in connection.execute_wrappers:
            connection.execute_wrappers.append(counted)

    connection_created.connect(install, weak=False)


def _counting_off() -> None:
    # BENCH_NO_COUNTING: what the evaluation path costs without its metrics
    from flags import metrics

    metrics.evaluations_served = lambda answers, known, seconds: None
    metrics.request_answered = lambda route, status: None


_count_request_queries()
if os.environ.get("BENCH_NO_COUNTING"):
    _counting_off()
