"""Measurements of bench/scale.py (Django is set up on the scale database).

Not a benchmark itself: each function prints its figures.
"""

from __future__ import annotations

import gc
import statistics
import time
import tracemalloc

from bench._scale_data import ENVIRONMENT


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * 4096 / 2**20


def _fresh_store(**kwargs):
    from flags.snapshot import RulesetStore

    store = RulesetStore(**kwargs)
    store.check_versions()
    return store


def _load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def snapshot_build(rounds: int = 3) -> dict:
    """Print the time and memory of loading the environment's ruleset.

    The build is what the store runs on a reload (flags.mappers.ruleset_data
    then flags.engine.compile_ruleset); the last known good write that
    follows runs on the store's writer thread and is timed apart.
    """
    from django.db import connection

    from flags import engine, mappers
    from flags.models import Environment

    print(f"snapshot build (flags.snapshot reload of one environment; load {_load()})")
    environment = Environment.objects.get(key=ENVIRONMENT)
    connection.ensure_connection()
    gc.collect()
    before = _rss_mb()
    times, reads = [], []
    started = time.perf_counter()
    data = mappers.ruleset_data(environment)
    reads.append(time.perf_counter() - started)
    ruleset = engine.compile_ruleset(data)
    times.append(time.perf_counter() - started)
    del data
    gc.collect()
    rss = _rss_mb() - before
    for _ in range(rounds - 1):
        del ruleset
        gc.collect()
        started = time.perf_counter()
        data = mappers.ruleset_data(environment)
        reads.append(time.perf_counter() - started)
        ruleset = engine.compile_ruleset(data)
        times.append(time.perf_counter() - started)
        del data
    overrides = sum(len(flag.overrides) for flag in ruleset.flags.values())
    print(
        f"  {len(ruleset.flags):,} flags, {overrides:,} overrides,"
        f" {len(ruleset.merchants):,} merchants with attributes"
    )
    print(
        f"  build: median {statistics.median(times):.2f} s, best {min(times):.2f} s"
        f" of {rounds} (read {statistics.median(reads):.2f} s, the rest"
        f" compile)  [target <= 2 s]"
    )
    from flags import ruleset_json

    started = time.perf_counter()
    payload = ruleset_json.serialized(ruleset)
    encode = time.perf_counter() - started
    del ruleset
    gc.collect()
    tracemalloc.start()
    ruleset = engine.compile_ruleset(mappers.ruleset_data(environment))
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"  memory held by the ruleset: RSS +{rss:.0f} MB; tracemalloc"
        f" {current / 2**20:.0f} MB (peak while building {peak / 2**20:.0f} MB)"
        f"  [target <= 500 MB]"
    )
    from flags.snapshot import RulesetStore

    store = RulesetStore()
    started = time.perf_counter()
    store._write_last_good(ruleset)
    write = time.perf_counter() - started
    print(
        f"  first JSON encoding {encode:.2f} s ({len(payload) / 2**20:.0f} MB,"
        f" then cached per version); last known good write {write:.2f} s"
        " (on the writer thread, off the request path)"
    )
    return {
        "build_s": statistics.median(times),
        "rss_mb": rss,
        "traced_mb": current / 2**20,
        "traced_peak_mb": peak / 2**20,
    }


_LISTENER = """
import sys, time
sys.path.insert(0, {root!r})
from bench import _serving
_serving.setup_django({url!r})
from flags.snapshot import RulesetStore
store = RulesetStore()
store.start()
store.get_ruleset({env!r})
while not (store._background_alive() and store._last_ok > 0):
    time.sleep(0.01)
time.sleep(0.3)
print("ready", flush=True)
for line in sys.stdin:
    want = int(line)
    deadline = time.monotonic() + 10
    while store.get_ruleset({env!r})[0].version < want:
        if time.monotonic() > deadline:
            break
        time.sleep(0.0005)
    print(time.time(), flush=True)
store.stop()
"""


def _percentiles(values: list[float]) -> str:
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
    return (
        f"p50 {statistics.median(values) * 1000:.1f} ms,"
        f" p99 {p99 * 1000:.1f} ms, max {values[-1] * 1000:.1f} ms"
    )


def single_changes(url: str, changes: int) -> dict:
    """Print the time to apply one flag change here and in another process."""
    import subprocess
    import sys
    from pathlib import Path

    from bench._scale_data import flag_key
    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment, Flag, Merchant

    print(f"single change (one flag; load {_load()})")
    root = str(Path(__file__).resolve().parents[1])
    listener = subprocess.Popen(
        [sys.executable, "-c", _LISTENER.format(root=root, url=url, env=ENVIRONMENT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "ready"
        store = _fresh_store(async_persist=True)
        store.get_ruleset(ENVIRONMENT)
        environment = Environment.objects.get(key=ENVIRONMENT)
        flag = Flag.objects.get(key=flag_key(500))
        merchants = list(
            Merchant.objects.filter(is_active=True)
            .exclude(overrides__flag=flag)
            .order_by("-key")[:changes]
        )
        kinds = {
            "percentage": lambda i: services.flag_state_set_percentage(
                actor=SYSTEM, flag=flag, environment=environment, percentage=i % 90
            ),
            "override add": lambda i: services.override_set(
                actor=SYSTEM,
                flag=flag,
                environment=environment,
                merchant=merchants[i - 1],
                variation="on",
            ),
            "override remove": lambda i: services.override_remove(
                actor=SYSTEM,
                flag=flag,
                environment=environment,
                merchant=merchants[i - 1],
            ),
            "kill / restore": lambda i: (
                services.flag_state_kill if i % 2 else services.flag_state_restore
            )(actor=SYSTEM, flag=flag, environment=environment, reason="bench"),
        }
        figures = {}
        everywhere = []
        for name, change in kinds.items():
            writes, applies, remote = [], [], []
            for i in range(changes):
                started = time.perf_counter()
                change(i + 1)
                committed = time.time()
                writes.append(time.perf_counter() - started)
                version = Environment.objects.filter(pk=environment.pk).values_list(
                    "ruleset_version", flat=True
                )[0]
                listener.stdin.write(f"{version}\n")
                listener.stdin.flush()
                started = time.perf_counter()
                store.check_versions()
                applies.append(time.perf_counter() - started)
                assert store.get_ruleset(ENVIRONMENT)[0].version == version
                remote.append(float(listener.stdout.readline()) - committed)
            everywhere.extend(remote)
            figures[name] = (writes, applies, remote)
            print(
                f"  {name:16s} apply here {_percentiles(applies)}"
                f" | other process answers {_percentiles(remote)}"
                f" | the audited write {statistics.median(writes) * 1000:.0f} ms"
            )
        print(
            f"  {store.applied} applied without reload, {store.reloads} reloads"
            "  [targets: apply <= 50 ms, answered everywhere <= 1 s]"
        )
        return {"everywhere": everywhere}
    finally:
        listener.stdin.close()
        listener.wait(timeout=30)


def suggest_pilot(rounds: int = 2) -> dict:
    """Print the time of ``merchants suggest-pilot`` on the flag with events."""
    from io import StringIO

    from django.core.management import call_command

    from bench._scale_data import PILOT_FLAG
    from canary.models import OutcomeEvent

    events = OutcomeEvent.objects.filter(flag_key=PILOT_FLAG).count()
    print(
        f"merchants suggest-pilot --flag {PILOT_FLAG} ({events:,} of its events;"
        f" load {_load()})"
    )
    times = []
    for _ in range(rounds):
        out = StringIO()
        started = time.perf_counter()
        call_command(
            "merchants",
            "suggest-pilot",
            "--flag",
            PILOT_FLAG,
            "--env",
            ENVIRONMENT,
            stdout=out,
        )
        times.append(time.perf_counter() - started)
    seen = next(
        (line for line in out.getvalue().splitlines() if "more left out" in line), ""
    )
    print(
        f"  command: median {statistics.median(times):.2f} s, best {min(times):.2f} s"
        f" of {rounds}  [target <= 10 s]  {seen.strip()}"
    )
    return {"suggest_pilot_s": statistics.median(times)}


def list_pages() -> dict:
    """Print query counts and times of the first and a deep page of each list."""
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    print(f"list pages (admin and API, logged-in superuser; load {_load()})")
    user = User.objects.filter(username="bench-admin").first()
    if user is None:
        user = User.objects.create_superuser("bench-admin", password="x")
    client = Client()
    client.force_login(user)
    flag = "scale-0500"
    pages = [
        ("admin merchants", "/admin/flags/merchant/"),
        ("admin merchants p.500", "/admin/flags/merchant/?p=500"),
        ("admin merchants search", "/admin/flags/merchant/?q=m-0000042"),
        ("admin flags", "/admin/flags/flag/"),
        ("admin flag states", "/admin/flags/flagstate/"),
        ("admin overrides", "/admin/flags/merchantoverride/"),
        ("admin audit events", "/admin/audit/auditevent/"),
        ("api merchants", "/api/v1/merchants?limit=100"),
        ("api merchants deep", "/api/v1/merchants?limit=100&offset=500000"),
        ("api flags", "/api/v1/flags?limit=100"),
        ("api overrides", f"/api/v1/flags/{flag}/environments/{ENVIRONMENT}/overrides"),
        ("api audit events", "/api/v1/audit-events?limit=100"),
    ]
    figures = {}
    for name, url in pages:
        client.get(url)  # warm
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - started
        slowest = max(
            (float(q["time"]) for q in captured.captured_queries), default=0.0
        )
        figures[name] = (response.status_code, len(captured), elapsed)
        print(
            f"  {name:24s} {response.status_code}  {len(captured):2d} queries"
            f"  {elapsed * 1000:6.0f} ms (slowest query {slowest * 1000:.0f} ms)"
        )
    return figures


_WRITES = """
import json, sys
sys.path.insert(0, {root!r})
from bench import _scale_writes
parser = getattr(_scale_writes, "build_parser", None)
args = parser().parse_args({argv!r}) if parser else None
print("FIGURES " + json.dumps(_scale_writes.run(args), default=str))
"""


def write_throughput(argv: list[str]) -> dict:
    """Print item 6's figures from bench/_scale_writes.py (another helper's).

    It runs in a process of its own, with its own arguments (``argv``, its
    own database): this process's Django is set up on the scale database.
    """
    import importlib.util
    import json
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("bench._scale_writes") is None:
        print(
            "write throughput (item 6): bench/_scale_writes.py is not here;"
            " nothing measured"
        )
        return {}
    print(f"write throughput (item 6, bench/_scale_writes.py {' '.join(argv)})")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-c", _WRITES.format(root=root, argv=argv)],
        capture_output=True,
        text=True,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("FIGURES ")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  failed: {last}")
        return {}
    figures = json.loads(lines[-1].removeprefix("FIGURES "))
    for name, value in figures.items():
        print(f"  {name}: {value}")
    return figures
