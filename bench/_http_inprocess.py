"""The hot path in this process, without a server: CPU per request.

``counting_share`` calls the hot path's WSGI callable directly (no socket,
no server), with the metrics counting on and then off, and prints the CPU
time per request of this thread (``time.thread_time``, so the serving
threads in the background do not count) and counting's share of it.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

BODY = json.dumps({"context": {"merchant": "m-42"}, "flags": ["bench-05"]}).encode()
ROUNDS = 9
CALLS = 5_000


def _environ(key: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/evaluate",
        "QUERY_STRING": "",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(BODY)),
        "HTTP_AUTHORIZATION": f"Bearer {key}",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(BODY),
    }


def _us_per_request(app: Any, key: str) -> float:
    """Return the least CPU time per request of one round of CALLS calls."""
    template = _environ(key)

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        assert status.startswith("200"), status

    environs = []
    for _ in range(CALLS):
        environ = dict(template)
        environ["wsgi.input"] = io.BytesIO(BODY)
        environs.append(environ)
    started = time.thread_time()
    for environ in environs:
        app(environ, start_response)
    return (time.thread_time() - started) / CALLS * 1e6


def _counting_ns(key: str) -> float:
    """Return the CPU time of the counting calls alone (ns per request)."""
    from flags import engine, metrics
    from flags.snapshot import get_ruleset

    ruleset, _stale = get_ruleset("bench")
    answers = [engine.evaluate(ruleset, "bench-05", {"merchant": "m-42"})]
    served, answered = metrics.evaluations_served, metrics.request_answered
    known = ruleset.flags
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.thread_time()
        for _ in range(CALLS):
            served(answers, known, 0.00002)
            answered("evaluate", 200)
        best = min(best, (time.thread_time() - started) / CALLS * 1e9)
    return best


def counting_share(key: str) -> None:
    """Print the hot path's CPU per request with and without counting.

    Rounds with and without counting alternate, and each figure is the
    least of its rounds (preemption by other processes only adds).
    """
    from flags import metrics
    from flags.hotpath import make_app

    app = make_app()
    _us_per_request(app, key)  # warm: key, ruleset, cached bodies
    saved = metrics.evaluations_served, metrics.request_answered
    counted, uncounted = [], []
    for _ in range(ROUNDS):
        counted.append(_us_per_request(app, key))
        metrics.evaluations_served = lambda answers, known, seconds: None
        metrics.request_answered = lambda route, status: None
        try:
            uncounted.append(_us_per_request(app, key))
        finally:
            metrics.evaluations_served, metrics.request_answered = saved
    path, bare = min(counted), min(uncounted)
    alone = _counting_ns(key)
    difference = 100 * (path - bare) / path
    share = max(difference, 100 * alone / 1000 / path)
    print(
        f"\nin process, native 1 flag, CPU per request (least of {ROUNDS} rounds): "
        f"{path:.1f} us counted, {bare:.1f} us without counting "
        f"({difference:.1f}% of the path); the counting calls alone {alone:.0f} ns "
        f"(target: counting <= 10% of the path: {'met' if share <= 10 else 'NOT met'})"
    )
