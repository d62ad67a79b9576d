"""What a flag page says: who gets what per environment, and a live evaluation.

``who_gets_what`` reads the flag's states and overrides and says, in words
and as shares for a bar, what each environment serves, in evaluation order
(overrides, rules, the default). ``evaluate_here`` answers for one merchant
with the real engine over the same in-memory ruleset the evaluation API
serves (``flags.snapshot.get_ruleset``), so what the page says is what an
app gets. Both only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timeuntil

from controlplane.api.input import text_problem
from controlplane.exceptions import DomainError
from flags import engine
from flags.admin.targeting_rows import clause_words, percent_text, serve_words
from flags.models import Flag, FlagState, MerchantOverride, Segment

MAX_OVERRIDES_SHOWN = 5
MAX_MERCHANT_KEY = 128


@dataclass
class Share:
    variation: str
    percent: str  # "10.000"
    width: str  # CSS width, "10.000%"


@dataclass
class Environment:
    key: str
    status: str  # killed | off | on
    parts: list[str] = field(default_factory=list)
    shares: list[Share] = field(default_factory=list)
    change_url: str = ""
    version: int = 0
    state_pk: int = 0

    @property
    def sentence(self) -> str:
        return f"{self.key}: " + " · ".join(self.parts)


def _shares(flag: Flag, serve: dict) -> list[Share]:
    """Return one share per variation, in the flag's order (stable colours)."""
    weights = {key: 0 for key in flag.variation_keys}
    if "split" in serve:
        for arm in serve["split"]:
            weights[arm["variation"]] = arm["weight"]
    elif serve.get("variation") in weights:
        weights[serve["variation"]] = engine.BUCKETS
    return [
        Share(
            variation=key,
            percent=percent_text(weight),
            width=f"{Decimal(weight) / 1000:.3f}%",
        )
        for key, weight in weights.items()
    ]


def _override_part(override: MerchantOverride, now: Any) -> str:
    if override.expires_at is None:
        return f"{override.merchant.key} → {override.variation} (override)"
    return (
        f"{override.merchant.key} → {override.variation} "
        f"(override, expires in {timeuntil(override.expires_at, now)})"
    )


def _default_parts(serve: dict, has_targeting: bool) -> list[str]:
    everyone = "everyone else" if has_targeting else "everyone"
    if "split" not in serve:
        return [f"{everyone} → {serve.get('variation', '?')}"]
    arms = [arm for arm in serve["split"] if arm["weight"] > 0]
    parts = [
        f"{percent_text(arm['weight'])}% of merchants → {arm['variation']}"
        for arm in arms[:-1]
    ]
    if arms:
        last = arms[-1]
        rest = "everyone else" if parts or has_targeting else "everyone"
        parts.append(f"{rest} → {last['variation']}")
    return parts


def _environment(
    state: FlagState,
    overrides: list[MerchantOverride],
    segment_names: dict[str, str],
    now: Any,
) -> Environment:
    flag = state.flag
    result = Environment(
        key=state.environment.key,
        status="on",
        change_url=reverse("admin:flags_flagstate_change", args=[state.pk]),
        version=state.version,
        state_pk=state.pk,
    )
    off = {"variation": state.off_variation}
    if state.killed_at is not None or not state.enabled:
        killed = state.killed_at is not None
        result.status = "killed" if killed else "off"
        reason = f" ({state.kill_reason})" if killed and state.kill_reason else ""
        result.parts = [
            f"{result.status}{reason}",
            f"everyone → {state.off_variation}",
        ]
        result.shares = _shares(flag, off)
        return result
    live = [o for o in overrides if o.is_live(now)]
    result.parts = [_override_part(o, now) for o in live[:MAX_OVERRIDES_SHOWN]]
    if len(live) > MAX_OVERRIDES_SHOWN:
        result.parts.append(f"{len(live) - MAX_OVERRIDES_SHOWN} more overrides")
    for number, rule in enumerate(state.rules or [], start=1):
        where = " and ".join(
            clause_words(clause, segment_names) for clause in rule.get("clauses", [])
        )
        result.parts.append(
            f"rule {number} ({where}) → {serve_words(rule.get('serve', {}))}"
        )
    fallthrough = state.fallthrough or {}
    result.parts += _default_parts(fallthrough, bool(result.parts))
    result.shares = _shares(flag, fallthrough)
    return result


def who_gets_what(flag: Flag) -> list[Environment]:
    """Return, per environment in display order, what the flag serves."""
    states = list(
        FlagState.objects.filter(flag=flag)
        .select_related("flag", "environment")
        .order_by("environment__sort_order", "environment__key")
    )
    overrides: dict[int, list[MerchantOverride]] = {}
    for override in (
        MerchantOverride.objects.filter(flag=flag)
        .select_related("merchant")
        .order_by("merchant__key")
    ):
        overrides.setdefault(override.environment_id, []).append(override)
    wanted = {
        value
        for state in states
        for rule in state.rules or []
        for clause in rule.get("clauses", [])
        if clause.get("op") == "segment"
        for value in clause.get("values", [])
    }
    segment_names = dict(
        Segment.objects.filter(key__in=sorted(wanted)).values_list("key", "name")
    )
    now = timezone.now()
    return [
        _environment(state, overrides.get(state.environment_id, []), segment_names, now)
        for state in states
    ]


@dataclass
class Answer:
    environment: str
    merchant: str
    value: str = ""
    variation: str = ""
    reason: str = ""
    level: str = ""
    version: int = 0
    is_stale: bool = False
    error: str = ""
    field: str = ""  # the input an error is about


def evaluate_here(flag: Flag, environment: str, merchant: str) -> Answer:
    """Evaluate ``flag`` for ``merchant`` as the evaluation API would.

    Bad input (unknown environment, an empty, huge or undecodable key)
    comes back as ``Answer.error`` naming the field; never raises.
    """
    import json

    from flags.snapshot import get_ruleset

    answer = Answer(environment=environment, merchant=merchant)
    merchant = merchant.strip()
    problem = text_problem(merchant, allow_nul=False)
    if problem:
        answer.error, answer.field = f"merchant key {problem}", "merchant"
        answer.merchant = ""
        return answer
    if not merchant:
        answer.error, answer.field = "merchant key: is required", "merchant"
        return answer
    if len(merchant) > MAX_MERCHANT_KEY:
        answer.error, answer.field = (
            f"merchant key: at most {MAX_MERCHANT_KEY} characters",
            "merchant",
        )
        answer.merchant = merchant[:MAX_MERCHANT_KEY]
        return answer
    if not FlagState.objects.filter(flag=flag, environment__key=environment).exists():
        answer.error, answer.field = (
            "environment: choose one of the flag's environments",
            "environment",
        )
        answer.environment = ""
        return answer
    try:
        ruleset, answer.is_stale = get_ruleset(environment)
    except DomainError as exc:
        answer.error = exc.message
        return answer
    evaluation = engine.evaluate(ruleset, flag.key, {engine.MERCHANT: merchant})
    answer.value = json.dumps(evaluation.value, ensure_ascii=False)
    answer.variation = evaluation.variation or ""
    answer.reason = evaluation.reason
    answer.level = evaluation.level
    answer.version = evaluation.version
    if evaluation.error_code:
        answer.error = f"{evaluation.error_code}: {evaluation.error_message}"
    return answer
