"""``manage.py demo [--serve]``: migrate, create demo data if absent, serve.

The zero-setup entry point behind ``bash .ci/serve``: it runs ``migrate``
quietly, calls ``canary.demo.demo_project_ensure()``, prints where to go and how to
log in, and with ``--serve`` starts the background services and the dev
server.
"""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError

from canary.demo import demo_project_ensure
from controlplane.conf import setting
from controlplane.management.commands._output import OutputCommand
from flags.demo import DemoReport


def start_background_services() -> None:
    """Start what runs beside the dev server; called right before runserver.

    Without a broker (tasks run in process), start the canary controller
    loop and the scheduled changes' loop in daemon threads, so rollouts
    advance and roll back by themselves and scheduled changes apply on time
    without a separate Celery worker and beat. With a broker configured,
    ``celery worker`` and ``celery beat`` run both instead.
    """
    from celery import current_app

    if not current_app.conf.task_always_eager:
        return
    from canary.controller import start_loop_thread
    from flags.changes.loop import start_loop_thread as start_changes_loop

    start_loop_thread()
    _changes_loops.append(start_changes_loop())


_changes_loops: list = []  # (thread, stop event) of the scheduled changes' loop


def stop_background_services() -> None:
    """Stop what ``start_background_services`` started and wait for it."""
    from canary.controller import stop_loop_threads

    stop_loop_threads()
    while _changes_loops:
        thread, stop = _changes_loops.pop()
        stop.set()
        thread.join(timeout=10)


class Command(OutputCommand):
    help = (
        "Prepare a demo: run migrations, create the demo environments, merchants, "
        "segments, flags and admin user if absent, print the admin login; with "
        "--serve, run the dev server."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--serve",
            action="store_true",
            help="Run the dev server after preparing the data.",
        )
        parser.add_argument(
            "--addr",
            default="127.0.0.1:8000",
            help="Address for --serve (default 127.0.0.1:8000).",
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Never prompt.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        addr = options["addr"]
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CommandError(
                f"--addr: {addr!r} is not HOST:PORT (e.g. 127.0.0.1:8000)"
            )
        try:
            call_command("migrate", verbosity=0, interactive=options["interactive"])
            report = demo_project_ensure()
        except DatabaseError as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise CommandError(f"database error: {text}") from None
        self._banner(addr, report)
        if options["serve"]:
            start_background_services()
            call_command("runserver", addr, use_reloader=False)

    def _banner(self, addr: str, report: DemoReport) -> None:
        url = f"http://{addr}"
        created = (
            f"created {len(report.environments)} environments, {len(report.merchants)} "
            f"merchants, {len(report.segments)} segments, {len(report.flags)} flags"
            if report.created_anything
            else "demo data already present, left as is"
        )
        lines = [
            "",
            "Control plane demo ready (" + created + ").",
            f"  Admin:    {url}/admin/",
            f"  Login:    {setting('DEMO_ADMIN_USERNAME')} / {setting('DEMO_ADMIN_PASSWORD')}"
            + ("  (created now)" if report.admin_created else ""),
            f"  Metrics:  {url}/metrics",
            "",
            "Next, in another terminal:",
            "  .venv/bin/python manage.py flag list",
            "  .venv/bin/python manage.py flag override add sequential_workflow m-1001 "
            "--env production --note pilot",
            "  .venv/bin/python manage.py flag percentage enable_supplier_policy 10 "
            "--env production",
            "  .venv/bin/python manage.py audit verify",
            "",
        ]
        self.stdout.write("\n".join(lines))
