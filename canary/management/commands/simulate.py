"""``manage.py simulate``: a workload for the canary demo.

Evaluates a flag for the demo merchants through the evaluation API over
HTTP (``POST /api/v1/evaluate``) and reports one outcome event per
evaluation (``POST /api/v1/events``), as an app behind the flag would. The
error rate and duration of an outcome depend on the variation served:
every variation gets the baseline (``--baseline-error-rate``,
``--baseline-ms``); once the flag's treatment share in the environment
reaches ``--regression-at`` percent, the treatment gets ``--error-rate``
and durations times ``--slowdown``. Prints a line per second; stops after
``--duration`` seconds.

``--history SECONDS`` first reports that many seconds of *past* traffic at
the same rate: outcome events of everyone on the control variation (the
baseline error rate and durations, no regression), ``occurred_at`` spread
evenly over the past window, posted to ``POST /api/v1/events`` in batches,
without evaluation calls (the past was served before the flag changed).
Run before ``rollout start``, they are the look-back from which compare
checks capture each merchant's baseline (CANARY_BASELINE_SECONDS).
``--duration 0`` then stops after the history.

Several ``--flag`` options simulate a release: each request evaluates every
flag in one call and reports one outcome event naming them all with the
variations served (``flags``), and the regression hits the requests served
the treatment of ``--regression-flag`` (default: the first flag).

The randomness is a seeded generator: it shapes the simulated outcomes,
never who gets the flag (that is the evaluation API's bucketing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from django.core.management.base import CommandError, CommandParser

from controlplane.audit.actors import actor_for_cli
from controlplane.exceptions import DomainError
from controlplane.management.commands._output import OutputCommand


def _number(
    minimum: float, maximum: float | None = None, *, integer: bool = False
) -> Any:
    def parse(raw: str) -> float | int:
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            kind = "a whole number" if integer else "a number"
            raise argparse.ArgumentTypeError(f"{raw!r} is not {kind}") from None
        if (
            not math.isfinite(value)
            or value < minimum
            or (maximum is not None and value > maximum)
        ):
            bound = (
                f"between {minimum:g} and {maximum:g}"
                if maximum is not None
                else f"at least {minimum:g}"
            )
            raise argparse.ArgumentTypeError(f"must be {bound}")
        return value

    return parse


def treatment_share(flag_key: str, environment_key: str, treatment: str) -> float:
    """Return the percentage of merchants the flag's default serves
    ``treatment`` to in the environment (overrides and rules not counted:
    a pilot is 0%)."""
    from flags.models import FlagState

    state = FlagState.objects.filter(
        flag__key=flag_key, environment__key=environment_key
    ).first()
    if state is None or not state.enabled:
        return 0.0
    fallthrough = state.fallthrough or {}
    if "variation" in fallthrough:
        return 100.0 if fallthrough["variation"] == treatment else 0.0
    weights = fallthrough.get("split") or []
    total = sum(arm.get("weight", 0) for arm in weights) or 1
    return (
        100.0
        * sum(
            arm.get("weight", 0) for arm in weights if arm.get("variation") == treatment
        )
        / total
    )


def _variations_of(flag_key: str, environment_key: str) -> tuple[str, str]:
    """Return the treatment and control of the flag's latest rollout there,
    else ``("on", "off")``."""
    from canary.models import Rollout

    rollout = (
        Rollout.objects.filter(flag__key=flag_key, environment__key=environment_key)
        .order_by("-id")
        .first()
    )
    if rollout is None:
        return "on", "off"
    return rollout.treatment_variation or "on", rollout.control_variation or "off"


def history_batch_size() -> int:
    """Return the events one history POST carries: the server's batch limit,
    kept well under its body limit (an event is about 250 bytes)."""
    from controlplane.conf import setting

    return max(
        1,
        min(
            int(setting("OUTCOME_EVENTS_MAX_BATCH")),
            int(setting("OUTCOME_EVENTS_MAX_BODY_BYTES")) // 500,
        ),
    )


def _event(
    rng: random.Random,
    options: dict,
    *,
    served: dict[str, str],
    merchant: str,
    bad: bool,
    when: dt.datetime,
) -> dict:
    """Return one outcome event of the flags ``served`` ({flag: variation}):
    the regression's error rate and slowdown when ``bad``, else the
    baseline's; log-normal durations."""
    error_rate = options["error_rate"] if bad else options["baseline_error_rate"]
    median = options["baseline_ms"] * (options["slowdown"] if bad else 1.0)
    failed = rng.random() < error_rate
    if len(served) == 1:
        ((flag, variation),) = served.items()
        subject: dict = {"flag": flag, "variation": variation}
    else:
        subject = {"flags": dict(served)}
    return {
        **subject,
        "merchant": merchant,
        "outcome": "failure" if failed else "success",
        "duration_ms": round(median * math.exp(rng.gauss(0, 0.25)), 2),
        "occurred_at": when.isoformat(),
        "name": options["name"],
    }


@dataclass
class Second:
    """What one second of the simulation did."""

    evaluations: int = 0
    variations: dict[str, int] = field(default_factory=dict)
    failures: int = 0
    errors: int = 0
    events: list[dict] = field(default_factory=list)


class Command(OutputCommand):
    help = (
        "Simulate app traffic for a flag: evaluate it for the demo merchants through the "
        "evaluation API and report outcome events whose error rate and duration depend on "
        "the variation (and on an injected regression past a treatment share)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--flag",
            required=True,
            action="append",
            help="flag key; repeat it to simulate a release of several flags",
        )
        parser.add_argument(
            "--regression-flag",
            default=None,
            help="with several --flag: whose treatment carries the regression "
            "(default: the first flag)",
        )
        parser.add_argument("--env", default="production", help="environment key")
        per_second = _number(1, 2000)
        parser.add_argument(
            "--rate",
            type=lambda raw: per_second(raw.removesuffix("/s")),
            default=50.0,
            help="evaluations per second, e.g. 50 or 50/s (default 50)",
        )
        parser.add_argument(
            "--duration",
            type=_number(0, 86400),
            default=60.0,
            help="stop after this many seconds (default 60; 0: after --history)",
        )
        parser.add_argument(
            "--history",
            type=_number(0, 86400),
            default=0.0,
            help="first report this many seconds of past outcome events at --rate, "
            "everyone on the control variation (the look-back baselines are "
            "captured from at rollout start); default 0",
        )
        parser.add_argument(
            "--regression-at",
            type=_number(0, 100),
            default=None,
            help="inject the regression once the treatment share reaches this "
            "percentage",
        )
        parser.add_argument(
            "--error-rate",
            type=_number(0, 1),
            default=0.08,
            help="treatment error rate under the regression (default 0.08)",
        )
        parser.add_argument(
            "--slowdown",
            type=_number(0.01, 100),
            default=1.5,
            help="treatment duration factor under the regression (default 1.5)",
        )
        parser.add_argument(
            "--baseline-error-rate",
            type=_number(0, 1),
            default=0.01,
            help="error rate without the regression (default 0.01)",
        )
        parser.add_argument(
            "--baseline-ms",
            type=_number(0.1, 600000),
            default=120.0,
            help="median duration without the regression (default 120)",
        )
        parser.add_argument(
            "--base-url",
            default="http://127.0.0.1:8000",
            help="the control plane (default http://127.0.0.1:8000)",
        )
        parser.add_argument(
            "--key", help="server key of the environment (default: create one)"
        )
        parser.add_argument(
            "--merchants",
            help="comma-separated merchant keys (default: the active merchants)",
        )
        parser.add_argument(
            "--seed", type=int, default=7, help="random seed for outcomes"
        )
        parser.add_argument("--name", default="checkout", help="outcome event name")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            self._run(options)
        except DomainError as exc:
            raise CommandError(" ".join(exc.message.split())) from None

    def _merchants(self, options: dict) -> list[str]:
        from flags.models import Merchant

        if options["merchants"]:
            keys = [k.strip() for k in options["merchants"].split(",") if k.strip()]
        else:
            keys = list(
                Merchant.objects.filter(is_active=True)
                .order_by("key")
                .values_list("key", flat=True)
            )
        if not keys:
            raise CommandError(
                "no merchants to simulate: run `manage.py demo` or pass --merchants"
            )
        return keys

    def _key(self, options: dict) -> str:
        if options["key"]:
            return options["key"]
        from controlplane.apikeys.services import apikey_create
        from flags.selectors import environment_get

        environment = environment_get(options["env"])
        _, raw = apikey_create(
            actor=actor_for_cli(),
            name="simulator",
            scope="server",
            environment=environment,
        )
        self.stdout.write(f"created server key for {environment.key}: {raw}")
        return raw

    def _post(self, url: str, key: str, body: dict) -> dict:
        # urllib sends a small body with the headers in one packet; a client
        # sending them apart meets delayed ACKs (40 ms a request).
        request = urllib.request.Request(
            url,
            data=json.dumps(body).encode("utf-8"),
            method="POST",
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read() or b"{}").get("message") or exc.reason
            except ValueError:
                message = exc.reason
            raise CommandError(
                f"{url} answered {exc.code}: {' '.join(str(message).split())[:300]}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(
                f"cannot reach {url} ({reason}): is the server running "
                "(bash .ci/serve)?"
            ) from None

    def _history(
        self,
        options: dict,
        rng: random.Random,
        controls: dict[str, str],
        merchants: list[str],
        base: str,
        key: str,
    ) -> None:
        """Report ``--history`` seconds of past control traffic at ``--rate``:
        occurred_at spread evenly over the window ending now, posted in
        batches, no evaluation calls."""
        seconds, rate = options["history"], options["rate"]
        total = max(1, round(rate * seconds))
        end = dt.datetime.now(dt.UTC)
        start = end - dt.timedelta(seconds=seconds)
        size = history_batch_size()
        names = ", ".join(controls)
        distinct = list(dict.fromkeys(controls.values()))
        control_text = ", ".join(f"{v!r}" for v in distinct)
        self.stdout.write(
            f"history: {total} outcome events of {names} over the past {seconds:g}s "
            f"({rate:g}/s) on {control_text} for {len(merchants)} merchants, "
            f"in batches of {size}"
        )
        step = seconds / total
        reported = failures = 0
        lines = 0
        while reported < total:
            batch = [
                _event(
                    rng,
                    options,
                    served=controls,
                    merchant=merchants[rng.randrange(len(merchants))],
                    bad=False,
                    when=start + dt.timedelta(seconds=(n + 0.5) * step),
                )
                for n in range(reported, min(total, reported + size))
            ]
            answer = self._post(f"{base}/api/v1/events", key, {"events": batch})
            if answer.get("accepted") != len(batch):
                raise CommandError(
                    f"{base}/api/v1/events accepted {answer.get('accepted')!r} of "
                    f"{len(batch)} history events"
                )
            reported += len(batch)
            failures += sum(event["outcome"] == "failure" for event in batch)
            # about ten progress lines, whatever the size
            if reported == total or reported * 10 // total > lines:
                lines = reported * 10 // total
                self.stdout.write(
                    f"history: {reported}/{total} events reported "
                    f"(up to {batch[-1]['occurred_at'][11:19]} UTC)"
                )
        self.stdout.write(
            f"history done: {reported} events ({'/'.join(distinct)} {reported}), "
            f"{failures} failures reported"
        )

    def _run(self, options: dict) -> None:
        from flags.selectors import environment_get, flag_get

        flags = [flag_get(key).key for key in dict.fromkeys(options["flag"])]
        bad_flag = options["regression_flag"] or flags[0]
        if bad_flag not in flags:
            raise CommandError(
                f"--regression-flag: {bad_flag!r} is not one of the --flag keys"
            )
        environment = environment_get(options["env"])
        merchants = self._merchants(options)
        base = options["base_url"].rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise CommandError(
                f"--base-url: {base!r} is not an http:// or https:// URL"
            )
        rate, duration = options["rate"], options["duration"]
        if duration == 0 and not options["history"]:
            raise CommandError("--duration: 0 reports nothing without --history")
        key = self._key(options)
        variations = {k: _variations_of(k, environment.key) for k in flags}
        treatment = variations[bad_flag][0]
        rng = random.Random(options["seed"])
        if options["history"]:
            controls = {k: control for k, (_, control) in variations.items()}
            self._history(options, rng, controls, merchants, base, key)
        if duration == 0:
            return
        regression_at = options["regression_at"]
        self.stdout.write(
            f"simulating {rate:g} evaluations/s of {', '.join(flags)} in "
            f"{environment.key} for {duration:g}s over {len(merchants)} merchants; "
            f"treatment {treatment!r}"
            + (f" of {bad_flag}" if len(flags) > 1 else "")
            + (
                f", regression at {regression_at:g}%: error rate {options['error_rate']:g}, "
                f"x{options['slowdown']:g} slower"
                if regression_at is not None
                else ""
            )
        )
        started = time.monotonic()
        totals = Second()
        second_index = 0
        while time.monotonic() - started < duration:
            second_index += 1
            share = treatment_share(bad_flag, environment.key, treatment)
            regressed = regression_at is not None and share >= regression_at
            tick_end = min(started + second_index, started + duration)
            count = max(1, round(rate * (tick_end - (started + second_index - 1))))
            second = Second()
            for n in range(count):
                merchant = merchants[rng.randrange(len(merchants))]
                answer = self._post(
                    f"{base}/api/v1/evaluate",
                    key,
                    {"context": {"merchant": merchant}, "flags": flags},
                )
                served = {
                    str(item.get("key")): str(item.get("variation"))
                    for item in answer["flags"]
                }
                variation = served.get(bad_flag, "")
                event = _event(
                    rng,
                    options,
                    served=served,
                    merchant=merchant,
                    bad=regressed and variation == treatment,
                    when=dt.datetime.now(dt.UTC),
                )
                second.evaluations += 1
                second.variations[variation] = second.variations.get(variation, 0) + 1
                second.failures += event["outcome"] == "failure"
                second.events.append(event)
                # Spread the evaluations over the second.
                pause = (
                    started
                    + second_index
                    - 1
                    + (n + 1) / count * (tick_end - (started + second_index - 1))
                    - time.monotonic()
                )
                if pause > 0:
                    time.sleep(pause)
            accepted = self._post(
                f"{base}/api/v1/events", key, {"events": second.events}
            ).get("accepted", 0)
            totals.evaluations += second.evaluations
            totals.failures += second.failures
            for name, n in second.variations.items():
                totals.variations[name] = totals.variations.get(name, 0) + n
            split = ", ".join(
                f"{name} {n}" for name, n in sorted(second.variations.items())
            )
            self.stdout.write(
                f"t={time.monotonic() - started:5.1f}s evaluated {second.evaluations} ({split}); "
                f"treatment share {share:g}%; regression {'ON' if regressed else 'off'}; "
                f"failures {second.failures}; events accepted {accepted}"
            )
        split = ", ".join(
            f"{name} {n}" for name, n in sorted(totals.variations.items())
        )
        self.stdout.write(
            f"done: {totals.evaluations} evaluations ({split}), "
            f"{totals.failures} failures reported"
        )
