"""A lone surrogate in the context never reaches mmh3 or re: ERROR instead.

``mmh3.hash("\\ud800")`` crashes the interpreter, so every case evaluates
in a child process that imports only the engine; a regression shows as a
failed case (the child's exit status), not as a crashed test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
HALF = {
    "split": [
        {"variation": "on", "weight": 50_000},
        {"variation": "off", "weight": 50_000},
    ]
}


def _flag(key: str, **state) -> dict:
    return {
        "key": key,
        "value_type": "bool",
        "variations": BOOL,
        "off_variation": "off",
        "enabled": True,
        "fallthrough": {"variation": "off"},
        **state,
    }


def _rule(op: str, attribute: str, values: list, serve: dict | None = None) -> dict:
    return {
        "clauses": [{"attribute": attribute, "op": op, "values": values}],
        "serve": serve or {"variation": "on"},
    }


RULESET = {
    "environment": "production",
    "version": 7,
    "segments": {
        "gold": {"clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}]}
    },
    "merchants": {"m-reg": {"tier": "gold"}},
    "flags": [
        _flag("merchant_split", fallthrough=HALF),
        _flag("disabled", enabled=False),
        _flag("in_rule", rules=[_rule("in", "tier", ["gold"])]),
        _flag("starts_rule", rules=[_rule("starts_with", "tier", ["go"])]),
        _flag("matches_rule", rules=[_rule("matches", "tier", ["^g.*d$"])]),
        _flag("segment_rule", rules=[_rule("segment", "", ["gold"])]),
        _flag("rule_split", rules=[_rule("in", "plan", ["pro"], HALF)]),
        _flag("by_account", bucket_by="account", fallthrough=HALF),
        _flag("overridden", overrides=[{"merchant": "m-1", "variation": "on"}]),
    ],
}

# The child evaluates each (flag, context) and prints the answers; "\ud800"
# is built in the child, as the JSON escape of a request would build it.
CHILD = r"""
import json, sys
from flags import engine
ruleset = engine.compile_ruleset(json.loads(sys.argv[1]))
flag, context = json.loads(sys.argv[2])
context = {
    key: (value.replace("<S>", "\ud800") if isinstance(value, str)
          else [v.replace("<S>", "\udfff") for v in value] if isinstance(value, list)
          else value)
    for key, value in context.items()
}
answer = engine.evaluate(ruleset, flag, context, "fallback")
print(json.dumps([answer.value, answer.reason, answer.error_code, answer.error_message]))
"""


def _evaluate_in_child(flag: str, context: dict) -> tuple[int, list | None, str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(RULESET), json.dumps([flag, context])],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(done.stdout) if done.returncode == 0 else None
    return done.returncode, answer, done.stderr[-2000:]


@pytest.mark.parametrize(
    "flag, context, attribute",
    [
        ("merchant_split", {"merchant": "m-<S>"}, "merchant"),
        ("disabled", {"merchant": "<S>"}, "merchant"),
        ("overridden", {"merchant": "<S>"}, "merchant"),
        ("rule_split", {"merchant": "<S>", "plan": "pro"}, "merchant"),
        ("in_rule", {"merchant": "m-1", "tier": "g<S>"}, "tier"),
        ("starts_rule", {"merchant": "m-1", "tier": "<S>"}, "tier"),
        ("matches_rule", {"merchant": "m-1", "tier": "<S>"}, "tier"),
        ("matches_rule", {"merchant": "m-1", "tier": ["gold", "<S>"]}, "tier"),
        ("segment_rule", {"merchant": "m-1", "tier": "<S>"}, "tier"),
        ("by_account", {"merchant": "m-1", "account": "a<S>"}, "account"),
    ],
)
def test_engine__lone_surrogate_in_context__error_invalid_context_default(
    flag, context, attribute
):
    # When
    status, answer, stderr = _evaluate_in_child(flag, context)
    # Then: the child lived, and answered the default with the reason
    assert status == 0, (status, stderr)
    value, reason, code, message = answer
    assert (value, reason, code) == ("fallback", "ERROR", "INVALID_CONTEXT")
    assert repr(attribute) in message


@pytest.mark.parametrize(
    "flag, context, reason",
    [
        ("merchant_split", {"merchant": "m-é"}, "SPLIT"),
        ("in_rule", {"merchant": "m-1", "tier": "gold"}, "TARGETING_MATCH"),
        (
            "matches_rule",
            {"merchant": "m-1", "tier": ["silver", "gold"]},
            "TARGETING_MATCH",
        ),
        ("by_account", {"merchant": "m-1", "account": "ü-1"}, "SPLIT"),
        ("segment_rule", {"merchant": "m-reg"}, "TARGETING_MATCH"),
    ],
)
def test_engine__valid_non_ascii_context__evaluated_as_before(flag, context, reason):
    # When
    status, answer, stderr = _evaluate_in_child(flag, context)
    # Then
    assert status == 0, (status, stderr)
    assert answer[1] == reason
    assert answer[2] is None
