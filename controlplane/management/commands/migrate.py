"""``manage.py migrate`` without the web's statement and read timeouts.

A migration may rewrite a large table in one statement; the timeouts that
keep a request from hanging on a dead database must not cut it half-way.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import migrate

from controlplane.db import timeouts_lifted
from controlplane.management.commands._output import OutputCommand


class Command(OutputCommand, migrate.Command):
    help = migrate.Command.help + " (no statement or read timeout)"

    def handle(self, *args: Any, **options: Any) -> None:
        with timeouts_lifted(options["database"]):
            super().handle(*args, **options)
