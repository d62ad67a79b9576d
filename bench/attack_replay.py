"""Replay the hardening attack list against a real server, from outside.

Starts gunicorn (sync, 2 workers) on PostgreSQL, as the tester of issue
"Hardening" did, with a server key, a management key of a superuser service
user and a canary-only management key, then sends every hostile request of
that list over real HTTP and prints, per case, the status, the time and
whether a worker died. At the end it prints the totals: 5xx answers, worker
deaths, leaked secrets (a live admin session key, password and API-key
hashes are planted; no answer may contain them) and slow answers (> 1 s).
It exits non-zero when any total is not zero.

    .venv/bin/python bench/attack_replay.py \\
        --database-url postgres://postgres@127.0.0.1:5432/cp_attack
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _serving  # noqa: E402
from bench._attack_cases import Case, cases, sql_check_cases  # noqa: E402


def prepare(url: str) -> tuple[dict[str, str], list[str]]:
    """Create the data, the keys and the planted secrets; return both."""
    _serving.ensure_database(url)
    _serving.setup_django(url)
    from django.contrib.auth.models import Permission, User
    from django.contrib.sessions.backends.db import SessionStore

    from controlplane.apikeys.models import ApiKey
    from controlplane.apikeys.services import apikey_create
    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment, Flag, Merchant

    env = Environment.objects.filter(key="production").first() or (
        services.environment_create(actor=SYSTEM, key="production", name="production")
    )
    if not Merchant.objects.filter(key="m-1").exists():
        services.merchant_create(actor=SYSTEM, key="m-1", attributes={})
    for key in ("f-attack", "f-regex"):
        if not Flag.objects.filter(key=key).exists():
            services.flag_create(actor=SYSTEM, key=key, name=key)
    attack_flag = Flag.objects.get(key="f-attack")
    if not attack_flag.states.get(environment=env).enabled:
        # a split, so that every evaluation hashes the merchant key
        services.flag_state_set_enabled(
            actor=SYSTEM, flag=attack_flag, environment=env, enabled=True
        )
        services.flag_state_set_percentage(
            actor=SYSTEM, flag=attack_flag, environment=env, percentage=50
        )
    regex_flag = Flag.objects.get(key="f-regex")
    state = regex_flag.states.get(environment=env)
    if not state.rules:
        # ReDoS: a backtracking engine takes seconds on 28 characters.
        clause = {"attribute": "code", "op": "matches", "values": ["^(a+)+$"]}
        services.flag_state_update(
            actor=SYSTEM,
            flag=regex_flag,
            environment=env,
            expected_version=state.version,
            enabled=True,
            rules=[{"clauses": [clause], "serve": {"variation": "on"}}],
        )
    admin, _ = User.objects.get_or_create(
        username="attack-admin", defaults={"is_superuser": True, "is_staff": True}
    )
    admin.set_password("attack-admin-password")
    admin.save()
    canary_user, _ = User.objects.get_or_create(username="attack-canary")
    canary_user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="canary").exclude(
            codename="manage_sql_checks"
        )
        | Permission.objects.filter(
            content_type__app_label="flags", codename__startswith="view_"
        )
    )
    sql_user, _ = User.objects.get_or_create(username="attack-sqlcanary")
    sql_user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="canary")
        | Permission.objects.filter(
            content_type__app_label="flags", codename__startswith="view_"
        )
    )
    session = SessionStore()
    session["_auth_user_id"] = str(admin.pk)
    session.create()
    keys = {
        "server": apikey_create(
            actor=SYSTEM, name="attack-srv", scope="server", environment=env
        )[1],
        "admin": apikey_create(
            actor=SYSTEM, name="attack-mgt", scope="management", user=admin
        )[1],
        "sqlcanary": apikey_create(
            actor=SYSTEM, name="attack-sqlcanary", scope="management", user=sql_user
        )[1],
        "canary": apikey_create(
            actor=SYSTEM, name="attack-canary", scope="management", user=canary_user
        )[1],
    }
    secrets = [session.session_key, admin.password.split("$")[-1]]
    secrets += [k.secret_hash for k in ApiKey.objects.all()]
    return keys, secrets


def workers(master: int) -> set[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return set()
    return {int(pid) for pid in children.split()}


def send(port: int, case: Case, keys: dict[str, str]) -> tuple[int, bytes]:
    headers = {"Content-Type": case.content_type}
    if case.key != "none":
        headers["Authorization"] = f"Bearer {keys[case.key]}"
    if case.chunked:
        return _send_chunked(port, case, headers)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(case.method, case.path, body=case.body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
        return 0, str(exc).encode()
    finally:
        connection.close()


def _send_chunked(port: int, case: Case, headers: dict[str, str]) -> tuple[int, bytes]:
    body = case.body or b""
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    payload = head.encode() + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(payload)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line = data.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


def _refuse(name: str) -> float:
    raise ValueError(name)


def _strict_json(body: bytes) -> bool:
    """Return whether ``body`` is empty or strict JSON (no NaN/Infinity)."""
    if not body.strip():
        return True
    try:
        json.loads(body, parse_constant=_refuse)
    except ValueError:
        return False
    return True


def metrics_series(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/cp_attack"
    )
    args = parser.parse_args()
    keys, secrets = prepare(args.database_url)
    port = _serving.free_port()
    server = _serving.start_gunicorn(args.database_url, port, workers=2)
    totals = {
        "5xx": 0,
        "worker deaths": 0,
        "leaks": 0,
        "invalid answers": 0,
        "slow (> 1 s)": 0,
    }
    try:
        print(f"{'case':<44} {'status':>6} {'ms':>8}  note")
        for case in cases() + sql_check_cases():
            before = workers(server.pid)
            started = time.perf_counter()
            status, body = send(port, case, keys)
            elapsed = time.perf_counter() - started
            time.sleep(0.2)  # let the master notice a dead worker
            notes = []
            if status >= 500 or status == 0:
                totals["5xx"] += 1
                notes.append("SERVER ERROR")
            if workers(server.pid) != before:
                totals["worker deaths"] += 1
                notes.append("WORKER DIED")
            if any(secret and secret.encode() in body for secret in secrets):
                totals["leaks"] += 1
                notes.append("LEAKED A SECRET")
            if 200 <= status < 300 and not _strict_json(body):
                totals["invalid answers"] += 1
                notes.append("INVALID JSON")
            if case.absent and case.absent in body:
                totals["invalid answers"] += 1
                notes.append("BODY IGNORED")
            if elapsed > 1.0:
                totals["slow (> 1 s)"] += 1
                notes.append("SLOW")
            print(
                f"{case.name[:44]:<44} {status:>6} {elapsed * 1000:>8.1f}  {' '.join(notes)}"
            )
        # /metrics must not grow with what callers send
        send(
            port,
            Case(
                "warm",
                "POST",
                "/api/v1/evaluate",
                b'{"context": {"merchant": "m-1"}, "flags": ["warm-unknown"]}',
            ),
            keys,
        )
        series_before = metrics_series(port)
        for index in range(400):
            send(
                port,
                Case(
                    "unknown flag",
                    "POST",
                    "/api/v1/evaluate",
                    json.dumps(
                        {"context": {"merchant": "m-1"}, "flags": [f"x{index}" * 2000]}
                    ).encode(),
                ),
                keys,
            )
        growth = metrics_series(port) - series_before
        print(f"{'400 unknown 10 KB flag keys: new series':<44} {growth:>6}")
        # a few new series are fine (a label seen for the first time); one per
        # request is the defect
        totals["metric series growth > 10"] = int(growth > 10)
    finally:
        _serving.stop(server)
    print()
    for name, count in totals.items():
        print(f"{name:<24} {count}")
    return 1 if any(totals.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
