"""Propagation to relays and to local-evaluation clients (bench/propagation.py).

Starts the control plane as ``granian --interface asgi
controlplane.asgi:application`` (the stream's server), R relays
(``manage.py relay``, no database) following it, and C ``flags.client``
clients in this process following the control plane's stream (30 s poll).
After each committed change, polls every relay and reads every client until
all answer the new value: the time until the slowest did.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import _serving

ROOT = Path(__file__).resolve().parents[1]
NO_DATABASE = "postgres://nobody@127.0.0.1:9/unreachable"


def _env(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }


def _wait(url: str, key: str, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            request = urllib.request.Request(
                url, headers={"Authorization": f"Bearer {key}"}
            )
            with urllib.request.urlopen(request, timeout=1):
                return
        except Exception:
            time.sleep(0.1)
    sys.exit(f"{what} did not answer within 30 s")


def _start(argv: list[str], env: dict) -> subprocess.Popen:
    # a session of its own: stopping it stops its workers too
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(3)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


def _relay_answers(port: int, key: str, want: bool) -> bool:
    try:
        body = _serving.post_json(
            port,
            "/api/v1/evaluate",
            {"context": {"merchant": "m-42"}, "flags": ["propagation"]},
            key,
            timeout=2,
        )
        return body["flags"][0]["value"] is want
    except Exception:
        return False


def measure(
    *,
    database_url: str,
    key: str,
    relays: int,
    clients: int,
    changes: int,
    change: Any,
) -> dict[str, list[float]]:
    """Return the per-change delays (seconds) to the relays and to the clients."""
    from flags.client import FlagsClient

    cp_port = _serving.free_port()
    upstream = f"http://127.0.0.1:{cp_port}"
    processes = [
        _start(
            [
                sys.executable,
                "-m",
                "granian",
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(cp_port),
                "--workers",
                "1",
                "--no-ws",
                "controlplane.asgi:application",
            ],
            _env(database_url),
        )
    ]
    ruleset = "/api/v1/environments/bench/ruleset"
    relay_ports: list[int] = []
    followers: list[FlagsClient] = []
    result: dict[str, list[float]] = {"relays": [], "clients": []}
    with tempfile.TemporaryDirectory(prefix="bench-relays-") as tmp:
        try:
            _wait(upstream + ruleset, key, "the control plane")
            for index in range(relays):
                port = _serving.free_port()
                processes.append(
                    _start(
                        [
                            sys.executable,
                            "manage.py",
                            "relay",
                            "--upstream",
                            upstream,
                            "--key",
                            key,
                            "--port",
                            str(port),
                            "--data-dir",
                            str(Path(tmp) / f"relay-{index}"),
                        ],
                        _env(NO_DATABASE),
                    )
                )
                relay_ports.append(port)
            for port in relay_ports:
                _wait(f"http://127.0.0.1:{port}{ruleset}", key, "a relay")
            followers = [FlagsClient(upstream, key, "bench") for _ in range(clients)]
            time.sleep(1.0)
            value = False
            for _change in range(changes):
                value = not value
                change(value)
                committed = time.monotonic()
                seen: dict[str, float] = {}
                threads = [
                    threading.Thread(
                        target=_first_seen,
                        args=(
                            lambda p=port, v=value: _relay_answers(p, key, v),
                            committed,
                            seen,
                            "relays",
                            len(relay_ports),
                        ),
                    )
                    for port in relay_ports
                ]
                threads.append(
                    threading.Thread(
                        target=_first_seen,
                        args=(
                            lambda v=value: all(
                                c.evaluate("propagation", {"merchant": "m-42"}).value
                                is v
                                for c in followers
                            ),
                            committed,
                            seen,
                            "clients",
                            1,
                        ),
                    )
                )
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                for name, count in (("relays", relays), ("clients", clients)):
                    if count:
                        result[name].append(
                            seen.get(name, committed + float("inf")) - committed
                        )
                time.sleep(0.05)
        finally:
            for follower in followers:
                follower.close()
            for process in reversed(processes):
                _stop(process)
    return result


_seen_lock = threading.Lock()


def _first_seen(
    answered: Any, committed: float, seen: dict, name: str, of: int
) -> None:
    """Poll ``answered`` for 10 s; record the latest first-answer time of ``name``."""
    deadline = committed + 10
    while time.monotonic() < deadline:
        if answered():
            now = time.monotonic()
            with _seen_lock:
                seen[f"{name}#n"] = seen.get(f"{name}#n", 0) + 1
                seen[f"{name}#t"] = max(seen.get(f"{name}#t", 0.0), now)
                if seen[f"{name}#n"] == of:
                    seen[name] = seen[f"{name}#t"]
            return
        time.sleep(0.002)


def report(delays: dict[str, list[float]], relays: int, clients: int) -> None:
    """Print p50/p99/max per kind of follower."""
    labels = {
        "relays": f"{relays} relays (stream + conditional GET)",
        "clients": f"{clients} flags.client clients (stream, 30 s poll)",
    }
    for name, values in delays.items():
        if not values:
            continue
        missed = sum(1 for value in values if value == float("inf"))
        print(
            f"until all {labels[name]} answer: "
            f"p50 {1000 * _serving.percentile(values, 50):.0f} ms, "
            f"p99 {1000 * _serving.percentile(values, 99):.0f} ms, "
            f"max {1000 * max(values):.0f} ms, missed (>10 s) {missed}"
        )
