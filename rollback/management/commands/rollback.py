"""manage.py rollback preflight|run|status|retry|resume."""

from __future__ import annotations

import time

from django.core.management.base import CommandError

from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand

FINAL = ("succeeded", "failed")


class Command(OutputCommand):
    help = "Check, start, follow and retry rollback runs (levels: 1 flag, 2 deployment, 3 migrations)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        pre = sub.add_parser(
            "preflight", help="say which levels are possible for a deployment"
        )
        pre.add_argument("--deployment", required=True)
        pre.add_argument(
            "--flag", help="flag key for level 1 (in the deployment's environment)"
        )
        pre.add_argument(
            "--backend",
            help="deploy backend name (default: by service, else 'default')",
        )
        run = sub.add_parser("run", help="start a rollback run")
        run.add_argument("--deployment")
        run.add_argument("--level", required=True)
        run.add_argument("--reason", default="manual rollback")
        run.add_argument(
            "--flag", help="level 1: kill this flag in the deployment's environment"
        )
        run.add_argument(
            "--env", help="environment of --flag when no --deployment is given"
        )
        run.add_argument("--backend")
        run.add_argument(
            "--wait", action="store_true", help="follow the run until it ends"
        )
        run.add_argument(
            "--timeout", type=float, default=3600, help="seconds --wait waits"
        )
        status = sub.add_parser("status", help="show a run and its steps")
        status.add_argument("run")
        retry = sub.add_parser("retry", help="retry a failed run from its failed step")
        retry.add_argument("run")
        resume = sub.add_parser(
            "resume", help="queue a run again (safe: finished steps never rerun)"
        )
        resume.add_argument("run")

    def handle(self, *args, **options):
        try:
            return getattr(self, f"_{options['action']}")(options)
        except DomainError as exc:
            raise CommandError(exc.message) from None

    def _preflight(self, options):
        from rollback.preflight import rollback_preflight
        from rollback.selectors import deployment_get

        deployment = deployment_get(options["deployment"])
        report = rollback_preflight(
            deployment=deployment, flag=options["flag"], backend=options["backend"]
        )
        names = {1: "flag toggle", 2: "deployment revert", 3: "migration revert"}
        for level, rep in report.items():
            verdict = "possible" if rep["possible"] else "NOT possible"
            self.stdout.write(f"level {level} ({names[level]}): {verdict}")
            for reason in rep["reasons"]:
                self.stdout.write(f"  - {reason}")
            if rep["apps"]:
                self.stdout.write(f"  apps: {', '.join(rep['apps'])}")
            for step in rep.get("steps", []):
                self.stdout.write(f"  unapply {step}")
            for warning in rep["warnings"]:
                self.stdout.write(f"  warning: {warning}")

    def _run(self, options):
        from rollback.selectors import deployment_get
        from rollback.services import rollback_run_start

        deployment = (
            deployment_get(options["deployment"]) if options["deployment"] else None
        )
        flag_restore = None
        if options["flag"]:
            env = options["env"] or (deployment.environment.key if deployment else None)
            if not env:
                raise CommandError("--flag needs --env or --deployment")
            flag_restore = {
                "flag": options["flag"],
                "environment": env,
                "snapshot": None,
            }
        run = rollback_run_start(
            actor=actor_for_cli(),
            level=options["level"],
            reason=options["reason"],
            deployment=deployment,
            flag_restore=flag_restore,
            backend=options["backend"],
        )
        self.stdout.write(f"rollback run {run.pk} started (level {run.level})")
        if options["wait"]:
            self._follow(run.pk, options["timeout"])

    def _follow(self, run_id: int, timeout: float) -> None:
        from rollback.models import RollbackRun

        seen: dict[int, tuple[str, int]] = {}
        deadline = time.monotonic() + timeout
        while True:
            run = RollbackRun.objects.get(pk=run_id)
            for step in run.steps.order_by("position"):
                key = (step.status, step.attempts)
                if seen.get(step.pk) != key:
                    seen[step.pk] = key
                    self.stdout.write(
                        f"  step {step.position} {step.actuator}: {step.status}"
                        f" (attempt {step.attempts})"
                    )
                    if step.status in ("succeeded", "failed") and step.output:
                        for line in step.output.splitlines()[-5:]:
                            self.stdout.write(f"    {line}")
            if run.status in FINAL:
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"rollback run {run_id} still {run.status} after {timeout:g}s"
                )
            time.sleep(0.5)
        if run.status == "failed":
            raise CommandError(f"rollback run {run_id} failed: {run.error}")
        self.stdout.write(f"rollback run {run_id} succeeded")

    def _status(self, options):
        from rollback.selectors import rollback_run_get

        run = rollback_run_get(options["run"])
        deployment = (
            f"deployment {run.deployment_id}" if run.deployment_id else "no deployment"
        )
        self.stdout.write(
            f"rollback run {run.pk}: {run.status} (level {run.level}, {deployment}, "
            f"trigger {run.trigger}, by {run.actor_name})"
        )
        if run.reason:
            self.stdout.write(f"reason: {run.reason}")
        self.rows(
            "Steps",
            ("step", "actuator", "status", "attempts", "error"),
            (
                (
                    step.position,
                    step.actuator,
                    step.status,
                    step.attempts,
                    step.error or "-",
                )
                for step in run.steps.order_by("position")
            ),
            empty="no steps",
        )
        if run.error:
            self.stdout.write(f"error: {run.error}")

    def _retry(self, options):
        from rollback.services import rollback_run_retry

        run = rollback_run_retry(actor=actor_for_cli(), run_id=options["run"])
        self.stdout.write(f"rollback run {run.pk} retried")

    def _resume(self, options):
        from rollback.services import rollback_run_queue

        run = rollback_run_queue(run_id=options["run"])
        self.stdout.write(f"rollback run {run.pk} queued")
