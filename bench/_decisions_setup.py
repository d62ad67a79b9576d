"""Django set-up of the benchmarks that drive the real controller
(bench/decisions.py): a throwaway database, migrated, without fsync."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any


def ensure_postgres_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` if it does not exist."""
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(database_url: str | None) -> str:
    workdir = tempfile.mkdtemp(prefix="cp-bench-decisions-")
    atexit.register(shutil.rmtree, workdir, True)
    if database_url and database_url.startswith(("postgres://", "postgresql://")):
        ensure_postgres_database(database_url)
    url = database_url or f"sqlite:///{workdir}/bench.sqlite3"
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("CONTROLPLANE_VAR_DIR", workdir)
    os.environ.pop("CELERY_BROKER_URL", None)  # tasks run inline: no broker
    import django

    django.setup()
    from django.core.management import call_command

    if database_url is None:
        from django.db.backends.signals import connection_created

        def no_fsync(sender: Any, connection: Any, **kwargs: Any) -> None:
            # A throwaway file: durability is not measured, and waiting for
            # the disk at every commit would dominate a simulated canary.
            if connection.vendor == "sqlite":
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA synchronous = OFF")

        connection_created.connect(no_fsync, weak=False)
    else:
        from django.db.backends.signals import connection_created

        def no_commit_wait(sender: Any, connection: Any, **kwargs: Any) -> None:
            # A throwaway database: durability is not measured, and waiting
            # for the WAL flush at every commit would dominate.
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SET synchronous_commit = off")

        connection_created.connect(no_commit_wait, weak=False)

    call_command("migrate", verbosity=0)
    return url
