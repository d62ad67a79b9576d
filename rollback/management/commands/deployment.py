"""manage.py deployment record|list: what CI deployed, and when."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand


class Command(OutputCommand):
    help = (
        "Record a deployment (before `migrate`: it captures the migration state to go back to;"
        " or pass --migration-state from `deployment state` taken before migrating), or list them."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        record = sub.add_parser(
            "record", help="record SERVICE VERSION as deployed in --env"
        )
        record.add_argument("service")
        record.add_argument("version")
        record.add_argument(
            "--env", required=True, help="environment key, e.g. production"
        )
        record.add_argument("--artifact", default="", help="image tag, git sha, ...")
        record.add_argument(
            "--migration-state",
            default=None,
            help="JSON {alias: {app: migration|null}}; default: captured now",
        )
        sub.add_parser(
            "state",
            help="print the current migration state as JSON (for --migration-state)",
        )
        listing = sub.add_parser("list", help="list deployments, newest first")
        listing.add_argument("--service")
        listing.add_argument("--env")
        listing.add_argument("--limit", type=int, default=20)

    def handle(self, *args, **options):
        try:
            getattr(self, f"_{options['action']}")(options)
        except DomainError as exc:
            raise CommandError(exc.message) from None

    def _record(self, options):
        from rollback.services import deployment_record

        state = None
        if options["migration_state"] is not None:
            try:
                state = json.loads(options["migration_state"])
            except ValueError as exc:
                raise CommandError(f"--migration-state is not JSON: {exc}") from None
        deployment = deployment_record(
            actor=actor_for_cli(),
            service=options["service"],
            environment=options["env"],
            version=options["version"],
            artifact=options["artifact"],
            migration_state=state,
        )
        previous = deployment.previous.version if deployment.previous else "none"
        self.stdout.write(
            f"deployment {deployment.pk}: {deployment.service} {deployment.version} in "
            f"{deployment.environment.key} (previous: {previous})"
        )

    def _state(self, options):
        from rollback.actuators.migration_revert import migration_state_capture

        self.stdout.write(json.dumps(migration_state_capture(), sort_keys=True))

    def _list(self, options):
        from rollback.selectors import deployment_list

        rows = deployment_list(service=options["service"], environment=options["env"])[
            : options["limit"]
        ]
        self.rows(
            None,
            (
                "id",
                "deployed at",
                "environment",
                "service",
                "version",
                "status",
                "previous",
            ),
            (
                (
                    d.pk,
                    f"{d.deployed_at:%Y-%m-%d %H:%M:%S}",
                    d.environment.key,
                    d.service,
                    d.version,
                    d.status,
                    d.previous.version if d.previous else "-",
                )
                for d in rows
            ),
            empty="no deployments",
        )
