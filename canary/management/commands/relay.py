"""``manage.py relay``: a read-only evaluation node with no database.

The relay itself is flags.relay; it lives here, in canary, because it also
forwards canary's outcome events (canary.relay_events).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from controlplane.management.commands._output import OutputCommand


class Command(OutputCommand):
    help = (
        "Run a relay: follow the upstream control plane's ruleset for the key's "
        "environment, serve the evaluation endpoints and the stream from memory, "
        "forward outcome events upstream. Needs no database."
    )
    # system checks may read the database: a relay has none
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--upstream", required=True, help="control plane URL")
        parser.add_argument(
            "--key",
            default=os.environ.get("CONTROLPLANE_RELAY_KEY", ""),
            help="a server key of the environment to relay (default: the"
            " CONTROLPLANE_RELAY_KEY environment variable, kept out of ps)",
        )
        parser.add_argument("--port", type=int, default=8100)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--data-dir",
            default=None,
            help="last known good ruleset, verified keys (hashed), event outbox"
            " (default: VAR_DIR/relay-<port>)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        upstream = options["upstream"].rstrip("/")
        if not upstream.startswith(("http://", "https://")):
            raise CommandError("--upstream must be an http:// or https:// URL")
        if not options["key"].strip():
            raise CommandError("--key (or CONTROLPLANE_RELAY_KEY) is required")
        data_dir = Path(
            options["data_dir"] or Path(settings.VAR_DIR) / f"relay-{options['port']}"
        )
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CommandError(f"--data-dir {data_dir}: {exc.strerror}") from None
        from canary import relay_events
        from flags.relay.app import Relay

        relay = Relay(upstream, options["key"].strip(), data_dir, relay_events.make_app)
        relay.start()
        if relay.upstream.environment is None:
            self.stderr.write(
                "upstream unreachable and no ruleset on disk: evaluations answer"
                " 503 until the upstream answers"
            )
        try:
            asyncio.run(self._serve(relay, options["host"], options["port"]))
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc}"
            ) from None
        finally:
            relay.stop()

    async def _serve(self, relay: Any, host: str, port: int) -> None:
        from granian.constants import Interfaces
        from granian.server.embed import Server

        server = Server(
            relay,
            address=host,
            port=port,
            interface=Interfaces.ASGINL,
            log_access=False,
        )
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, server.stop)
        self.stdout.write(
            f"relay of {relay.upstream.base_url} on http://{host}:{port}"
            f" (environment {relay.upstream.environment})",
        )
        self.stdout.flush()
        await server.serve()
