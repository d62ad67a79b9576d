"""Servers for ``bench/http_eval.py``: gunicorn and granian on free ports.

Each ``start_*`` function starts one server of ``bench._http_apps`` with
the production settings on 127.0.0.1 and returns once it answers. The
servers of one run share the machine with wrk, so they run one at a time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import _serving

APP = "bench._http_apps:application"


@dataclass
class Started:
    """A running server: its process, port and what to clean up."""

    process: subprocess.Popen
    port: int
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        _serving.stop(self.process)
        for step in self.cleanup:
            step()


def _env(url: str, extra: dict[str, str] | None) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(_serving.ROOT),
        **(extra or {}),
    }


def _wait(process: subprocess.Popen, port: int, name: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{name} exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/raw", timeout=1)
            return
        except Exception:
            time.sleep(0.2)
    process.kill()
    sys.exit(f"{name} did not answer within 60 s")


def _multiproc_dir() -> tuple[dict[str, str], Callable[[], None]]:
    # several workers: prometheus-client's multiprocess mode (flags/metrics.py)
    path = tempfile.mkdtemp(prefix="cp-bench-prom-")
    return {"PROMETHEUS_MULTIPROC_DIR": path}, lambda: shutil.rmtree(path, True)


def start_gunicorn(url: str, workers: int, threads: int = 1) -> Started:
    """gunicorn, sync workers (``--threads`` > 1 makes them gthread)."""
    gunicorn = _serving.need("gunicorn", "pip install -r requirements.txt")
    port = _serving.free_port()
    extra, cleanup = _multiproc_dir()
    process = subprocess.Popen(
        [
            gunicorn,
            APP,
            f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
            f"--threads={threads}",
            "--log-level=warning",
        ],
        cwd=_serving.ROOT,
        env=_env(url, extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(process, port, "gunicorn")
    return Started(process, port, [cleanup])


def start_granian(
    url: str, workers: int, threads: int = 1, env: dict[str, str] | None = None
) -> Started:
    """granian, WSGI interface (the production server, README)."""
    granian = _serving.need("granian", "pip install -r requirements.txt")
    port = _serving.free_port()
    extra, cleanup = _multiproc_dir()
    extra.update(env or {})
    process = subprocess.Popen(
        [
            granian,
            "--interface=wsgi",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--workers={workers}",
            f"--blocking-threads={threads}",
            "--log-level=warning",
            "--no-ws",
            APP,
        ],
        cwd=_serving.ROOT,
        env=_env(url, extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(process, port, "granian")
    return Started(process, port, [cleanup])


def start_relay(url: str, key: str) -> Started:
    """A relay (``manage.py relay``, one process) of a granian control plane.

    The control plane runs with one worker; the relay follows its ruleset
    and answers from memory with no database. Returns once the relay
    answers an evaluation with 200.
    """
    upstream = start_granian(url, 1)
    port = _serving.free_port()
    data_dir = tempfile.mkdtemp(prefix="cp-bench-relay-")
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "relay",
            f"--upstream=http://127.0.0.1:{upstream.port}",
            f"--key={key}",
            f"--port={port}",
            f"--data-dir={data_dir}",
        ],
        cwd=_serving.ROOT,
        env=_env(url, None),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags/bench-05",
        data=b'{"context": {"targetingKey": "m-42"}}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    while True:
        if process.poll() is not None:
            upstream.stop()
            sys.exit(f"relay exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(request, timeout=1)
            break
        except Exception:
            if time.monotonic() > deadline:
                process.kill()
                upstream.stop()
                sys.exit("the relay did not answer within 60 s")
            time.sleep(0.2)
    return Started(
        process,
        port,
        [upstream.stop, lambda: shutil.rmtree(data_dir, True)],
    )
