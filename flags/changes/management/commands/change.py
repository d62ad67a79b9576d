"""``manage.py change ...``: four-eyes change requests on the services."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit.actors import Actor, actor_for_cli
from controlplane.exceptions import DomainError
from flags import selectors
from flags.changes import services
from flags.changes.management.commands._common import (
    change_header,
    change_line,
    parse_arguments,
)
from flags.changes.models import ChangeRequest
from flags.changes.operations import OPERATIONS


class Command(BaseCommand):
    help = (
        "Change requests (four-eyes): 'request' asks for a change "
        "(OPERATION KEY=VALUE...), 'approve' / 'reject' review one (not your "
        "own), 'cancel' withdraws your own, 'list' shows them, 'policy' sets "
        "how many approvals each kind of change needs in an environment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        common = argparse.ArgumentParser(add_help=False)
        common.add_argument(
            "--actor", help="Name recorded in the audit log (default: your login name)."
        )
        sub = parser.add_subparsers(dest="subcommand", required=True)
        p = sub.add_parser(
            "request",
            parents=[common],
            help="Ask for a change, e.g. request flag_state.percentage "
            "flag=checkout_theme environment=production percentage=10.",
        )
        p.add_argument("operation", help=f"One of: {', '.join(sorted(OPERATIONS))}.")
        p.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
        p.add_argument("--json", help="The arguments as one JSON object.")
        p.add_argument(
            "--state-version", type=int, dest="based_on", help="Based on this version."
        )
        p.add_argument("--reason", default="")
        for name, text in (
            ("approve", "Approve (the last approval applies the change)."),
            ("reject", "Reject: the request ends."),
        ):
            p = sub.add_parser(name, parents=[common], help=text)
            p.add_argument("id")
            p.add_argument("--comment", default="")
        p = sub.add_parser("cancel", parents=[common], help="Cancel your own request.")
        p.add_argument("id")
        p.add_argument("--reason", default="")
        p = sub.add_parser("list", help="List change requests, newest first.")
        p.add_argument("--status")
        p.add_argument("--env")
        p.add_argument("--limit", type=int, default=50)
        p = sub.add_parser(
            "policy",
            parents=[common],
            help="Show or set the approvals each kind of change needs (0: none).",
        )
        p.add_argument("--env", required=True)
        for kind in ("flag-state", "override", "kill", "rollout-start"):
            p.add_argument(f"--{kind}", type=int, metavar="N")

    def handle(self, *args: Any, **options: Any) -> None:
        handler: Callable[[dict], None] = getattr(self, f"_{options['subcommand']}")
        try:
            handler(options)
        except DomainError as exc:
            raise CommandError(" ".join(exc.message.split())) from None

    @staticmethod
    def _actor(options: dict) -> Actor:
        return actor_for_cli(options.get("actor") or None)

    def _show(self, change: ChangeRequest, verb: str) -> None:
        approvals = change.reviews.filter(decision="approve").count()
        self.stdout.write(
            f"change request {change.pk} {verb}: {change.status}, "
            f"{approvals}/{change.required_approvals} approvals"
            + (f" - {change.result}" if change.result else "")
        )

    def _request(self, options: dict) -> None:
        change = services.change_request_create(
            actor=self._actor(options),
            operation=options["operation"],
            arguments=parse_arguments(options["pairs"], options["json"]),
            expected_version=options["based_on"],
            reason=options["reason"],
        )
        self._show(change, "created")

    def _approve(self, options: dict) -> None:
        change = services.change_request_approve(
            change_request_id=options["id"],
            actor=self._actor(options),
            comment=options["comment"],
        )
        self._show(change, "approved")

    def _reject(self, options: dict) -> None:
        change = services.change_request_reject(
            change_request_id=options["id"],
            actor=self._actor(options),
            comment=options["comment"],
        )
        self._show(change, "rejected")

    def _cancel(self, options: dict) -> None:
        change = services.change_request_cancel(
            change_request_id=options["id"],
            actor=self._actor(options),
            reason=options["reason"],
        )
        self._show(change, "cancelled")

    def _list(self, options: dict) -> None:
        changes = ChangeRequest.objects.select_related("environment")
        if options["status"]:
            changes = changes.filter(status=options["status"])
        if options["env"]:
            changes = changes.filter(environment__key=options["env"])
        rows = list(changes.prefetch_related("reviews")[: max(1, options["limit"])])
        if not rows:
            self.stdout.write("No change requests.")
            return
        self.stdout.write(change_header("  approvals  result"))
        for change in rows:
            approvals = sum(1 for r in change.reviews.all() if r.decision == "approve")
            self.stdout.write(
                change_line(change, f"  {approvals}/{change.required_approvals}")
            )

    def _policy(self, options: dict) -> None:
        environment = selectors.environment_get(options["env"])
        counts = {
            kind: options[kind]
            for kind in ("flag_state", "override", "kill", "rollout_start")
            if options.get(kind) is not None
        }
        if counts:
            policy = services.approval_policy_set(
                actor=self._actor(options), environment=environment, **counts
            )
        else:
            from flags.changes.models import ApprovalPolicy

            policy = ApprovalPolicy.objects.filter(environment=environment).first()
            policy = policy or ApprovalPolicy(environment=environment)
        self.stdout.write(
            f"{environment.key}: flag states {policy.flag_state_approvals}, "
            f"overrides {policy.override_approvals}, kills {policy.kill_approvals}, "
            f"rollout starts {policy.rollout_start_approvals} approval(s)"
        )
