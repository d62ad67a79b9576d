"""HTTP evaluation benchmark: gunicorn + PostgreSQL + wrk.

Measures, in one run on this machine, req/s and p50/p99 latency of:

- a bare Django view returning a constant JSON (the ceiling: same gunicorn,
  same middleware, no work; served only by this benchmark's URLconf),
- ``POST /api/v1/evaluate`` for one flag,
- ``POST /ofrep/v1/evaluate/flags/{key}`` (OFREP single),
- ``POST /ofrep/v1/evaluate/flags`` (OFREP bulk, 20 flags).

Needs: ``wrk`` (Debian: ``apt-get install -y wrk``), gunicorn (in the venv),
a PostgreSQL server (``--database-url``; the database is created and migrated
if missing). Installs nothing itself.

    .venv/bin/python bench/http_eval.py --duration 5 --rounds 3 --connections 4
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# -- the bench-only URLconf (gunicorn imports bench.http_eval:application) ------


def bare(request):
    from django.http import HttpResponse

    return HttpResponse(b'{"ok":true}', content_type="application/json")


bare.csrf_exempt = True  # what csrf_exempt does; POST like the real endpoints


def __getattr__(name: str):
    # ``urlpatterns`` is built on first use: importing this module must not
    # import the project's URLs before Django is set up.
    if name == "urlpatterns":
        from django.urls import include, path

        patterns = [path("bench/bare", bare), path("", include("controlplane.urls"))]
        if os.environ.get("BENCH_EVAL_URLS_FIRST"):
            # what moving the evaluation include first in controlplane/urls.py gives
            patterns.insert(1, path("", include("flags.api.eval_urls")))
        globals()["urlpatterns"] = patterns
        return patterns
    raise AttributeError(name)


_application = None


def application(environ, start_response):
    """WSGI app: the project with this module's URLconf (adds /bench/bare)."""
    global _application
    if _application is None:
        from django.conf import settings
        from django.core.wsgi import get_wsgi_application

        app = get_wsgi_application()
        settings.ROOT_URLCONF = "bench.http_eval"
        _application = app
    return _application(environ, start_response)


# -- the benchmark ----------------------------------------------------------------

LUA = """wrk.method = "{method}"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
"""


def _ms(text: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(
    wrk: str,
    url: str,
    key: str,
    body: dict | None,
    duration: int,
    connections: int,
    threads: int,
) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            LUA.format(
                method="POST" if body is not None else "GET",
                body=json.dumps(body) if body is not None else "",
                key=key,
            )
        )
    try:
        output = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration}s",
                "--latency",
                "--timeout",
                "5s",
                "-s",
                script.name,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"50%\s+([\d.]+\w+)", output).group(1))
    p99 = _ms(re.search(r"99%\s+([\d.]+\w+)", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cp_serve_bench"
        ),
    )
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per endpoint and round"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds (median)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up per endpoint"
    )
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--eval-urls-first",
        action="store_true",
        help="route the evaluation URLs before the project's others "
        "(what-if for controlplane/urls.py)",
    )
    args = parser.parse_args()

    from bench import _serving

    wrk = _serving.need("wrk", "install it with `apt-get install -y wrk` (Debian)")
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url must be a PostgreSQL URL (production settings)")
    _serving.ensure_database(args.database_url)
    _serving.setup_django(args.database_url)
    environment, flags, key = _serving.bench_environment("bench", 20)
    from flags.models import Flag

    extra = (
        Flag.objects.exclude(key__startswith="bench-").filter(archived=False).count()
    )
    if extra:
        print(
            f"note: the database holds {extra} other flags; bulk answers include them"
        )

    port = _serving.free_port()
    server = _serving.start_gunicorn(
        args.database_url,
        port,
        args.workers,
        app="bench.http_eval:application",
        extra_env={"BENCH_EVAL_URLS_FIRST": "1"} if args.eval_urls_first else None,
    )
    base = f"http://127.0.0.1:{port}"
    context = {"context": {"merchant": "m-42"}}
    ofrep_context = {"context": {"targetingKey": "m-42"}}
    cases = [
        (
            "bare Django view (ceiling)",
            f"{base}/bench/bare",
            {**context, "flags": ["bench-05"]},
        ),
        (
            "native /api/v1/evaluate, 1 flag",
            f"{base}/api/v1/evaluate",
            {**context, "flags": ["bench-05"]},
        ),
        ("OFREP single", f"{base}/ofrep/v1/evaluate/flags/bench-05", ofrep_context),
        ("OFREP bulk (20 flags)", f"{base}/ofrep/v1/evaluate/flags", ofrep_context),
    ]
    results = []
    try:
        # sanity: every endpoint answers 200 before load
        _serving.post_json(
            port, "/api/v1/evaluate", {**context, "flags": ["bench-05"]}, key
        )
        for _name, url, body in cases:
            run_wrk(wrk, url, key, body, args.warmup, args.connections, args.threads)
        # rounds interleave the cases, so drifting load from other processes
        # hits them alike; each figure is the median over the rounds
        rounds: dict[str, list[dict]] = {name: [] for name, _url, _body in cases}
        for _round in range(args.rounds):
            for name, url, body in cases:
                rounds[name].append(
                    run_wrk(
                        wrk,
                        url,
                        key,
                        body,
                        args.duration,
                        args.connections,
                        args.threads,
                    )
                )
        for name, _url, _body in cases:
            runs = rounds[name]
            results.append(
                (
                    name,
                    {
                        field: statistics.median(run[field] for run in runs)
                        for field in ("rps", "p50_ms", "p99_ms")
                    }
                    | {"non_2xx": sum(run["non_2xx"] for run in runs)},
                )
            )
    finally:
        _serving.stop(server)

    ceiling = results[0][1]["rps"]
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  gunicorn sync x{args.workers}, "
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s x{args.rounds} rounds "
        f"(median), {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"PostgreSQL"
    )
    print(
        f"{'endpoint':36} {'req/s':>9} {'% bare':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>8}"
    )
    for name, result in results:
        print(
            f"{name:36} {result['rps']:9.0f} {100 * result['rps'] / ceiling:6.0f}% "
            f"{result['p50_ms']:7.2f} {result['p99_ms']:7.2f} {result['non_2xx']:8d}"
        )
    single = results[1][1]
    verdict = (
        "met"
        if single["rps"] >= 0.8 * ceiling and single["p99_ms"] <= 10
        else "NOT met"
    )
    print(f"\ntarget (single flag >= 80% of bare, p99 <= 10 ms): {verdict}")


if __name__ == "__main__":
    main()
