"""Properties of percentage splits: monotonic, accurate, independent.

The splits are built by ``flags.services.states.percentage_split``, the
function the services use, so the property covers what production serves.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flags import engine
from flags.models import Flag
from flags.services.states import percentage_split

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
KEYS = [f"merchant-{i}" for i in range(100_000)]


def rollout(flag_key: str, percent: float) -> engine.Ruleset:
    """Compile a ruleset where ``flag_key`` serves on to ``percent``% by default."""
    flag = Flag(key=flag_key, value_type="bool", variations=BOOL)
    return engine.compile_ruleset(
        {
            "environment": "production",
            "version": 1,
            "flags": [
                {
                    "key": flag_key,
                    "value_type": "bool",
                    "variations": BOOL,
                    "enabled": True,
                    "off_variation": "off",
                    "rules": [],
                    "bucket_by": "merchant",
                    "overrides": [],
                    "fallthrough": percentage_split(flag, percent, None, None),
                }
            ],
        }
    )


def is_on(rules: engine.Ruleset, flag_key: str, merchant: str) -> bool:
    result = engine.evaluate(rules, flag_key, {"merchant": merchant}, None)
    assert result.error_code is None
    return result.value


thousandths = st.integers(min_value=0, max_value=engine.BUCKETS)


@settings(max_examples=400, deadline=None)
@given(
    low=thousandths,
    high=thousandths,
    merchants=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=20),
    flag_key=st.sampled_from(["sequential_workflow", "enable_supplier_policy", "f"]),
)
def test_split__raising_percentage__never_turns_anyone_off(
    low, high, merchants, flag_key
):
    # Given two percentages p1 <= p2 (0.001% steps)
    p1, p2 = sorted((low / 1000, high / 1000))
    before, after = rollout(flag_key, p1), rollout(flag_key, p2)
    for merchant in merchants:
        # When
        on_before = is_on(before, flag_key, merchant)
        on_after = is_on(after, flag_key, merchant)
        # Then
        assert on_after or not on_before, (merchant, p1, p2)


@pytest.mark.parametrize("percent", [1, 10, 33.333, 50, 90])
def test_split__100000_keys__share_within_half_a_point(percent):
    # Given
    rules = rollout("sequential_workflow", percent)
    # When
    share = (
        sum(is_on(rules, "sequential_workflow", key) for key in KEYS) / len(KEYS) * 100
    )
    # Then
    assert abs(share - percent) <= 0.5, share


@pytest.mark.parametrize("percent", [0, 100])
def test_split__extremes__nobody_or_everybody(percent):
    # Given
    rules = rollout("sequential_workflow", percent)
    # When
    answers = {is_on(rules, "sequential_workflow", key) for key in KEYS[:5000]}
    # Then
    assert answers == {percent == 100}


def test_split__two_flags_at_50__independent():
    # Given
    first = rollout("sequential_workflow", 50)
    second = rollout("enable_supplier_policy", 50)
    # When
    both = sum(
        is_on(first, "sequential_workflow", key)
        and is_on(second, "enable_supplier_policy", key)
        for key in KEYS
    )
    # Then
    overlap = both / len(KEYS) * 100
    assert abs(overlap - 25) <= 1, overlap


@settings(max_examples=200, deadline=None)
@given(
    weight=st.integers(min_value=1, max_value=engine.BUCKETS - 1),
    merchants=st.lists(st.text(max_size=12), min_size=1, max_size=20),
)
def test_split__fast_path__same_answers_as_general_walk(weight, merchants):
    # Given the compiled shortcut and the same flag without it
    fast = rollout("f", weight / 1000)
    assert fast.flags["f"].merchant_split is not None
    slow = dataclasses.replace(
        fast, flags={"f": dataclasses.replace(fast.flags["f"], merchant_split=None)}
    )
    for merchant in merchants:
        # When
        answers = [
            engine.evaluate(rules, "f", {"merchant": merchant})
            for rules in (fast, slow)
        ]
        # Then
        assert answers[0] == answers[1]
        assert answers[0].value == (engine.bucket("f", merchant) < weight)
