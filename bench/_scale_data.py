"""Scale data for bench/scale.py, loaded into PostgreSQL with COPY.

Not a benchmark itself. ``ensure(url, sizes)`` makes the database hold a
registry of ``merchants`` merchants, ``flags`` flags in one environment
(``production``) with ``overrides`` merchant overrides spread over them, and
``events`` outcome events over the last ``days`` days. Rows go in through
psycopg's COPY (registry, flags, states, overrides) and one server-side
``INSERT ... SELECT generate_series`` (events), with ``synchronous_commit``
off: no ORM, no row-by-row inserts, no audit events (this is fixture data,
not changes). A marker table remembers the sizes, so a second run with the
same sizes reuses the data; other sizes rebuild the database from scratch.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

ENVIRONMENT = "production"
TIERS = ("bronze", "silver", "gold", "platinum")
COUNTRIES = "KR JP US DE FR GB IT ES NL SE NO DK FI PL BR MX CA AU IN SG".split()
PLANS = ("free", "pro", "enterprise")
EVENT_FLAGS = 4  # events are reported for the first few flags
PILOT_FLAG = "scale-0000"  # half of the events: the suggest-pilot flag


@dataclass(frozen=True)
class Sizes:
    merchants: int = 1_000_000
    flags: int = 1_000
    overrides: int = 100_000
    events: int = 20_000_000
    days: int = 30


def merchant_key(index: int) -> str:
    return f"m-{index:07d}"


def flag_key(index: int) -> str:
    return f"scale-{index:04d}"


def _admin(url: str) -> tuple[dict, str]:
    parts = urlparse(url)
    return (
        dict(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            user=parts.username or "postgres",
            password=parts.password or None,
        ),
        parts.path.lstrip("/"),
    )


def _stored_sizes(url: str) -> Sizes | None:
    import psycopg

    admin, name = _admin(url)
    try:
        with psycopg.connect(dbname=name, connect_timeout=5, **admin) as conn:
            row = conn.execute("SELECT sizes FROM bench_scale_marker").fetchone()
    except psycopg.Error:
        return None
    return Sizes(**json.loads(row[0])) if row else None


def _recreate(url: str) -> None:
    import psycopg

    admin, name = _admin(url)
    with psycopg.connect(
        dbname="postgres", autocommit=True, connect_timeout=5, **admin
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def ensure(url: str, sizes: Sizes, *, log=print) -> bool:
    """Make ``url`` hold the scale data of ``sizes``; return True if built.

    Django must not be set up yet in this process (it is set up here, on
    ``url``, after the database exists).
    """
    from bench import _serving

    if _stored_sizes(url) == sizes:
        _serving.setup_django(url)
        return False
    _recreate(url)
    _serving.setup_django(url)  # migrates the empty database
    started = time.perf_counter()
    _load(url, sizes, log=log)
    log(f"  data built in {time.perf_counter() - started:.1f} s")
    return True


def _load(url: str, sizes: Sizes, *, log) -> None:
    import psycopg

    from controlplane.audit.actors import SYSTEM
    from flags import services

    environment = services.environment_create(
        actor=SYSTEM, key=ENVIRONMENT, name="Production"
    )
    rng = random.Random(10)
    now = dt.datetime.now(dt.UTC).isoformat()
    admin, name = _admin(url)
    with psycopg.connect(dbname=name, **admin) as conn:
        conn.execute("SET synchronous_commit = off")
        started = time.perf_counter()
        with conn.cursor().copy(
            "COPY flags_merchant (key, name, is_active, attributes, created_at,"
            " updated_at) FROM STDIN"
        ) as copy:
            for index in range(sizes.merchants):
                attributes = (
                    f'{{"tier": "{TIERS[rng.randrange(4)]}", "country": '
                    f'"{COUNTRIES[rng.randrange(20)]}", "plan": '
                    f'"{PLANS[rng.randrange(3)]}"}}'
                )
                copy.write_row(
                    (
                        merchant_key(index),
                        "",
                        rng.random() >= 0.02,
                        attributes,
                        now,
                        now,
                    )
                )
        log(
            f"  {sizes.merchants:,} merchants copied in"
            f" {time.perf_counter() - started:.1f} s"
        )
        variations = json.dumps(
            [{"key": "on", "value": True}, {"key": "off", "value": False}]
        )
        with conn.cursor().copy(
            "COPY flags_flag (key, name, description, value_type, variations,"
            " owner, tags, archived, created_at, updated_at) FROM STDIN"
        ) as copy:
            for index in range(sizes.flags):
                key = flag_key(index)
                copy.write_row(
                    (key, key, "", "bool", variations, "", "[]", False, now, now)
                )
        flag_ids = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM flags_flag WHERE key LIKE 'scale-%' ORDER BY key"
            )
        ]
        gold_rule = json.dumps(
            [
                {
                    "clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}],
                    "serve": {"variation": "on"},
                }
            ]
        )
        with conn.cursor().copy(
            "COPY flags_flagstate (flag_id, environment_id, enabled, off_variation,"
            " rules, fallthrough, bucket_by, kill_reason, version, changed_in_version,"
            " updated_at)"
            " FROM STDIN"
        ) as copy:
            for index, flag_id in enumerate(flag_ids):
                weight = 1000 * (index % 101)
                fallthrough = json.dumps(
                    {
                        "split": [
                            {"variation": "on", "weight": weight},
                            {"variation": "off", "weight": 100_000 - weight},
                        ]
                    }
                )
                copy.write_row(
                    (
                        flag_id,
                        environment.pk,
                        index % 10 != 9,
                        "off",
                        gold_rule if index % 10 == 3 else "[]",
                        fallthrough,
                        "merchant",
                        "",
                        1,
                        0,
                        now,
                    )
                )
        first_merchant = conn.execute("SELECT min(id) FROM flags_merchant").fetchone()[
            0
        ]
        per_flag = max(sizes.overrides // max(sizes.flags, 1), 1)
        started = time.perf_counter()
        with conn.cursor().copy(
            "COPY flags_merchantoverride (flag_id, environment_id, merchant_id,"
            " variation, note, created_by, created_at, updated_at) FROM STDIN"
        ) as copy:
            written = 0
            for flag_id in flag_ids:
                for offset in rng.sample(range(sizes.merchants), per_flag):
                    if written == sizes.overrides:
                        break
                    copy.write_row(
                        (
                            flag_id,
                            environment.pk,
                            first_merchant + offset,
                            "on" if offset % 3 else "off",
                            "",
                            "bench",
                            now,
                            now,
                        )
                    )
                    written += 1
        log(f"  {written:,} overrides copied in {time.perf_counter() - started:.1f} s")
        conn.commit()
        started = time.perf_counter()
        _events(conn, environment.pk, sizes)
        conn.commit()
        log(
            f"  {sizes.events:,} outcome events inserted in"
            f" {time.perf_counter() - started:.1f} s"
        )
        conn.execute(
            "UPDATE flags_environment SET ruleset_version = ruleset_version + 1"
        )
        conn.execute("CREATE TABLE bench_scale_marker (sizes text)")
        conn.execute(
            "INSERT INTO bench_scale_marker VALUES (%s)", [json.dumps(asdict(sizes))]
        )
        conn.commit()
    with psycopg.connect(dbname=name, autocommit=True, **admin) as conn:
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        log(f"  vacuum analyze in {time.perf_counter() - started:.1f} s")


def _events(conn, environment_id: int, sizes: Sizes) -> None:
    """Insert the outcome events server-side: half for the pilot flag.

    Each merchant has its own failure rate (0-6%) and activity, so the
    suggestion has real choices to make; events fall uniformly in ``days``.
    """
    # no per-row foreign-key triggers, indexes built once afterwards
    conn.execute("SET session_replication_role = replica")
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename ="
        " 'canary_outcomeevent' AND indexname NOT LIKE '%%pkey'"
    ).fetchall()
    for index_name, _ in indexes:
        conn.execute(f'DROP INDEX "{index_name}"')
    conn.execute(
        """
        INSERT INTO canary_outcomeevent
            (flag_key, environment_id, merchant_key, variation, outcome,
             duration_ms, name, occurred_at, received_at)
        SELECT
            CASE WHEN i %% 2 = 0 THEN %(pilot)s
                 ELSE 'scale-' || lpad((1 + i %% %(others)s)::text, 4, '0') END,
            %(env)s,
            'm-' || lpad(m::text, 7, '0'),
            'off',
            CASE WHEN random() < (m %% 7) / 100.0 THEN 'failure' ELSE 'success' END,
            50 + random() * 200,
            'workflow',
            now() - random() * make_interval(days => %(days)s),
            now()
        FROM (
            SELECT i, (floor(pow(random(), 1.5) * %(merchants)s))::int AS m
            FROM generate_series(1, %(events)s) AS i
        ) AS picked
        """,
        {
            "pilot": PILOT_FLAG,
            "others": max(EVENT_FLAGS - 1, 1),
            "env": environment_id,
            "days": sizes.days,
            "merchants": sizes.merchants,
            "events": sizes.events,
        },
    )
    conn.execute("SET maintenance_work_mem = '512MB'")
    for _, definition in indexes:
        conn.execute(definition)
    conn.execute("SET session_replication_role = DEFAULT")
