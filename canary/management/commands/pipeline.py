"""``manage.py pipeline ...``: one rollout or release, staging then production.

Thin: each subcommand parses its options, calls one service and prints the
result. Mistakes (unknown pipeline, refused move, the creator approving)
end in a one-line CommandError.

    pipeline list [--status S]
    pipeline show ID
    pipeline create --flag F [--flag G ...] --stage staging:staging-then-production
                    --stage production:pilot-10-50-100 [--pilot m-1001]
                    [--duration-scale 0.05] [--check-template NAME] [--no-checks]
                    [--requires-approval] [--name N]
    pipeline start|approve|abort ID [--reason R]
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db.models import Count

from canary.management.commands._rollout_args import positive
from canary.models import PipelineStatus
from canary.services import pipelines as services
from canary.services.operator import PreflightFailed
from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand
from flags.changes import gate


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Command(OutputCommand):
    help = (
        "Pipelines across environments: list, show (stages and their evidence side"
        " by side), create (a rollout or release per stage), start, approve (not by"
        " its creator) and abort."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(
            dest="subcommand", required=True, metavar="SUBCOMMAND"
        )
        listing = sub.add_parser("list", help="list pipelines, newest first")
        listing.add_argument("--status", choices=PipelineStatus.values)
        listing.add_argument("--limit", type=int, default=20)
        show = sub.add_parser("show", help="the stages and each one's evidence")
        show.add_argument("id")
        create = sub.add_parser("create", help="create a draft pipeline")
        create.add_argument(
            "--flag",
            action="append",
            required=True,
            help="flag key (repeat: two or more flags make each stage a release)",
        )
        create.add_argument(
            "--stage",
            action="append",
            required=True,
            metavar="ENV:PLAN",
            help="a stage, in order, e.g. staging:staging-then-production (repeat)",
        )
        create.add_argument(
            "--pilot",
            action="append",
            default=[],
            help="pilot/internal merchant key for every stage (repeat or comma-separated)",
        )
        create.add_argument(
            "--duration-scale",
            type=positive,
            help="multiply every phase duration (0.05 turns minutes into seconds)",
        )
        create.add_argument(
            "--check-template", help="a check template, NAME or NAME@VERSION"
        )
        create.add_argument(
            "--no-checks",
            action="store_true",
            help="no health checks (phases advance on time alone)",
        )
        create.add_argument(
            "--requires-approval",
            action="store_true",
            help="wait for another person's approval before each next stage",
        )
        create.add_argument("--name", default="")
        for name, text in (
            ("start", "run the first stage's preflight and start it"),
            ("approve", "approve the next stage (not by the pipeline's creator)"),
            ("abort", "abort the running stage and every draft stage"),
        ):
            command = sub.add_parser(name, help=text)
            command.add_argument("id")
            command.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        handler = getattr(self, "_" + options["subcommand"])
        try:
            handler(options)
        except PreflightFailed as exc:
            for warning in exc.report.warnings:
                self.stderr.write(f"warning: {warning}")
            raise CommandError(" ".join(exc.message.split())) from None
        except DomainError as exc:
            field = (
                f"{exc.field}: " if exc.field and exc.field not in exc.message else ""
            )
            raise CommandError(field + " ".join(exc.message.split())) from None

    # -- subcommands ----------------------------------------------------------

    def _list(self, options: dict) -> None:
        pipelines = services.pipeline_list(status=options["status"]).annotate(
            stage_count=Count("stages")
        )
        self.rows(
            None,
            ("id", "status", "stage", "approval", "name"),
            (
                (
                    p.pk,
                    p.status,
                    f"{p.current_stage + 1}/{p.stage_count}",
                    "needed" if p.requires_approval else "-",
                    p.name,
                )
                for p in pipelines[: max(1, options["limit"])]
            ),
            empty="no pipelines",
        )

    def _show(self, options: dict) -> None:
        pipeline = services.pipeline_get(options["id"])
        self.stdout.write(
            f"pipeline {pipeline.pk} {pipeline.status}: {pipeline.name} "
            f"(stage {pipeline.current_stage + 1}, created by {pipeline.created_by}"
            + (f", approved by {pipeline.approved_by}" if pipeline.approved_by else "")
            + ")"
        )
        if (pipeline.summary or {}).get("reason"):
            self.stdout.write(f"why: {pipeline.summary['reason']}")
        evidence = services.pipeline_evidence(pipeline)
        self.rows(
            "Stages",
            ("stage", "environment", "target", "status", "started"),
            (
                (
                    e["index"] + 1,
                    e["environment"],
                    f"{e['kind']} {e['target_id']}",
                    e["status"],
                    e["started_at"].isoformat(timespec="seconds")
                    if e["started_at"]
                    else "-",
                )
                for e in evidence
            ),
            empty="no stages",
        )
        self.rows(
            "Evidence",
            ("stage", "flag", "check", "answer", "estimate", "interval", "margin"),
            (
                (
                    f"{e['index'] + 1} {e['environment']}",
                    c["flag"],
                    c["check"],
                    c["answer"] or "-",
                    _value(c["estimate"] if c["estimate"] is not None else c["value"]),
                    "-"
                    if c["lower"] is None
                    else f"[{_value(c['lower'])}, {_value(c['upper'])}]",
                    _value(c["margin"]),
                )
                for e in evidence
                for c in e["checks"]
            ),
            empty="no evidence yet",
        )

    def _create(self, options: dict) -> None:
        stages = []
        pilots = [k.strip() for raw in options["pilot"] for k in raw.split(",")]
        for raw in options["stage"]:
            environment, sep, template = raw.partition(":")
            if not sep or not environment or not template:
                raise CommandError(f"--stage {raw!r}: give ENV:PLAN")
            stage: dict[str, Any] = {
                "environment": environment,
                "template": template,
                "pilot_merchants": [k for k in pilots if k],
            }
            if options["duration_scale"] is not None:
                stage["duration_scale"] = options["duration_scale"]
            if options["no_checks"]:
                stage["checks"] = []
            elif options["check_template"]:
                stage["check_template"] = options["check_template"]
            stages.append(stage)
        flags = options["flag"]
        pipeline = services.pipeline_create(
            actor=actor_for_cli(),
            name=options["name"],
            flag=flags[0] if len(flags) == 1 else None,
            flags=flags if len(flags) > 1 else None,
            stages=stages,
            requires_approval=options["requires_approval"],
        )
        self.stdout.write(f"pipeline {pipeline.pk} created (draft): {pipeline.name}")
        self._show({"id": pipeline.pk})
        self.stdout.write(f"start it with: manage.py pipeline start {pipeline.pk}")

    def _start(self, options: dict) -> None:
        pipeline = services.pipeline_start(
            pipeline_id=options["id"], actor=actor_for_cli(), reason=options["reason"]
        )
        change = services.pipeline_pending_change(pipeline)
        if change is not None:  # the stage's environment asks approvals
            self.stdout.write(gate.pending_message(change))
            return
        self.stdout.write(
            f"pipeline {pipeline.pk} {pipeline.status}: stage "
            f"{pipeline.current_stage + 1} started"
        )

    def _approve(self, options: dict) -> None:
        pipeline = services.pipeline_approve(
            pipeline_id=options["id"], actor=actor_for_cli(), reason=options["reason"]
        )
        self.stdout.write(
            f"pipeline {pipeline.pk} approved: stage {pipeline.current_stage + 1} "
            "starts after its preflight"
        )

    def _abort(self, options: dict) -> None:
        pipeline = services.pipeline_abort(
            pipeline_id=options["id"], actor=actor_for_cli(), reason=options["reason"]
        )
        self.stdout.write(f"pipeline {pipeline.pk} {pipeline.status}")
