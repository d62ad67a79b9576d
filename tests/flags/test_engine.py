"""The pure engine: evaluation order, reasons, levels, errors, validation.

No database: rulesets are compiled from plain data, as ``mappers`` builds it.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flags import engine, validation

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
THEMES = [
    {"key": "light", "value": "light"},
    {"key": "dark", "value": "dark"},
    {"key": "blue", "value": "blue"},
]


def flag_data(key: str = "f", **changes: Any) -> dict:
    data = {
        "key": key,
        "value_type": "bool",
        "variations": BOOL,
        "enabled": True,
        "off_variation": "off",
        "rules": [],
        "fallthrough": {"variation": "off"},
        "bucket_by": "merchant",
        "overrides": [],
    }
    data.update(changes)
    return data


def ruleset(
    *flags: dict,
    segments: dict | None = None,
    merchants: dict | None = None,
    version: int = 3,
) -> engine.Ruleset:
    return engine.compile_ruleset(
        {
            "environment": "production",
            "version": version,
            "flags": list(flags),
            "segments": segments or {},
            "merchants": merchants or {},
        }
    )


def split(on: int) -> dict:
    return {
        "split": [
            {"variation": "on", "weight": on},
            {"variation": "off", "weight": engine.BUCKETS - on},
        ]
    }


def rule(*clauses: dict, serve: dict | None = None) -> dict:
    return {"clauses": list(clauses), "serve": serve or {"variation": "on"}}


def clause(attribute: str, op: str, *values: Any, negate: bool = False) -> dict:
    return {"attribute": attribute, "op": op, "values": list(values), "negate": negate}


def answer(evaluation: engine.Evaluation) -> tuple:
    return (
        evaluation.value,
        evaluation.variation,
        evaluation.reason,
        evaluation.level,
        evaluation.error_code,
    )


GOLD = {"gold": {"clauses": [clause("tier", "in", "gold")]}}
# Merchant keys whose bucket for flag "f" is below / above 10% (checked below).
F_IN_10 = next(f"m{i}" for i in range(1000) if engine.bucket("f", f"m{i}") < 10_000)
F_OUT_10 = next(f"m{i}" for i in range(1000) if engine.bucket("f", f"m{i}") >= 10_000)

ORDER_CASES = [
    # (id, flag data, context, expected (value, variation, reason, level, error))
    (
        "disabled beats everything",
        flag_data(
            enabled=False,
            overrides=[{"merchant": "pilot", "variation": "on"}],
            rules=[rule(clause("tier", "in", "gold"))],
            fallthrough={"variation": "on"},
        ),
        {"merchant": "pilot", "tier": "gold"},
        (False, "off", "DISABLED", "off", None),
    ),
    (
        "override beats rule and split",
        flag_data(
            overrides=[{"merchant": "pilot", "variation": "on"}],
            rules=[rule(clause("tier", "in", "gold"), serve={"variation": "off"})],
            fallthrough=split(10_000),
        ),
        {"merchant": "pilot", "tier": "gold"},
        (True, "on", "TARGETING_MATCH", "override", None),
    ),
    (
        "first matching rule wins",
        flag_data(
            rules=[
                rule(clause("tier", "in", "silver"), serve={"variation": "off"}),
                rule(clause("tier", "in", "gold"), serve={"variation": "on"}),
                rule(clause("country", "in", "KR"), serve={"variation": "off"}),
            ]
        ),
        {"merchant": "x", "tier": "gold", "country": "KR"},
        (True, "on", "TARGETING_MATCH", "rule:2", None),
    ),
    (
        "rule serving a split says SPLIT",
        flag_data(rules=[rule(clause("tier", "in", "gold"), serve=split(100_000 - 1))]),
        {"merchant": F_IN_10, "tier": "gold"},
        (True, "on", "SPLIT", "rule:1", None),
    ),
    (
        "fallthrough variation is STATIC",
        flag_data(fallthrough={"variation": "on"}),
        {"merchant": "x"},
        (True, "on", "STATIC", "default", None),
    ),
    (
        "fallthrough split inside the 10%",
        flag_data(fallthrough=split(10_000)),
        {"merchant": F_IN_10},
        (True, "on", "SPLIT", "default", None),
    ),
    (
        "fallthrough split outside the 10%",
        flag_data(fallthrough=split(10_000)),
        {"merchant": F_OUT_10},
        (False, "off", "SPLIT", "default", None),
    ),
    (
        "100% split is one arm, still SPLIT",
        flag_data(fallthrough=split(100_000)),
        {},
        (True, "on", "SPLIT", "default", None),
    ),
    (
        "split without a merchant",
        flag_data(fallthrough=split(10_000)),
        {"tier": "gold"},
        ("dflt", None, "ERROR", "default", "TARGETING_KEY_MISSING"),
    ),
    (
        "rule split without a merchant",
        flag_data(rules=[rule(clause("tier", "in", "gold"), serve=split(5_000))]),
        {"tier": "gold"},
        ("dflt", None, "ERROR", "default", "TARGETING_KEY_MISSING"),
    ),
    (
        "no rule matches: fallthrough",
        flag_data(rules=[rule(clause("tier", "in", "gold"))]),
        {"merchant": "x", "tier": "bronze"},
        (False, "off", "STATIC", "default", None),
    ),
]


@pytest.mark.parametrize(
    "flag, context, expected",
    [c[1:] for c in ORDER_CASES],
    ids=[c[0] for c in ORDER_CASES],
)
def test_evaluate__evaluation_order__one_answer_one_reason(flag, context, expected):
    # Given
    rules = ruleset(flag, segments=GOLD)
    # When
    result = engine.evaluate(rules, "f", context, "dflt")
    # Then
    assert answer(result) == expected
    assert result.version == 3
    assert result.flag_key == "f"


def test_evaluate__helper_keys__fall_on_the_expected_side_of_10_percent():
    # Given / When / Then (guards the table above)
    assert engine.bucket("f", F_IN_10) < 10_000 <= engine.bucket("f", F_OUT_10)


def test_evaluate__unknown_flag__default_with_flag_not_found():
    # Given
    rules = ruleset(flag_data())
    # When
    result = engine.evaluate(rules, "nope", {"merchant": "x"}, 42)
    # Then
    assert answer(result) == (42, None, "ERROR", "default", "FLAG_NOT_FOUND")
    assert result.is_error and "nope" in result.error_message


def test_evaluate__string_variants__serve_typed_value():
    # Given
    rules = ruleset(
        flag_data(
            "checkout_theme",
            value_type="string",
            variations=THEMES,
            off_variation="light",
            fallthrough={"variation": "dark"},
        )
    )
    # When
    result = engine.evaluate(rules, "checkout_theme", {"merchant": "x"}, "light")
    # Then
    assert (result.value, result.variation, result.reason) == ("dark", "dark", "STATIC")


@pytest.mark.parametrize(
    "asked, expected_code",
    [
        ("bool", None),
        ("string", "TYPE_MISMATCH"),
        ("number", "TYPE_MISMATCH"),
        ("json", "TYPE_MISMATCH"),
    ],
)
def test_evaluate__value_type__mismatch_answers_default(asked, expected_code):
    # Given
    rules = ruleset(flag_data(fallthrough={"variation": "on"}))
    # When
    result = engine.evaluate(rules, "f", {"merchant": "x"}, "dflt", value_type=asked)
    # Then
    assert result.error_code == expected_code
    assert result.value == ("dflt" if expected_code else True)


@pytest.mark.parametrize(
    "context", [None, "merchant", 7, ["merchant", "x"], ("a", "b")]
)
def test_evaluate__non_mapping_context__invalid_context(context):
    # Given
    rules = ruleset(flag_data(fallthrough={"variation": "on"}))
    # When
    result = engine.evaluate(rules, "f", context, "dflt")
    # Then
    assert answer(result) == ("dflt", None, "ERROR", "default", "INVALID_CONTEXT")


def test_evaluate__predicate_raises__general_error_not_exception():
    # Given a compiled rule whose predicate fails at evaluation time
    rules = ruleset(flag_data(rules=[rule(clause("tier", "in", "gold"))]))
    compiled = rules.flags["f"]

    def explode(context, ruleset):
        raise RuntimeError("boom")

    broken = engine.CompiledRule((explode,), compiled.rules[0].answer, None)
    object.__setattr__(compiled, "rules", (broken,))
    # When
    result = engine.evaluate(rules, "f", {"merchant": "x"}, "dflt")
    # Then
    assert answer(result) == ("dflt", None, "ERROR", "default", "GENERAL")
    assert "RuntimeError" in result.error_message


def test_evaluate__ruleset_is_garbage__general_error():
    # Given / When
    result = engine.evaluate(object(), "f", {"merchant": "x"}, "dflt")
    # Then
    assert (result.value, result.reason, result.error_code) == (
        "dflt",
        "ERROR",
        "GENERAL",
    )


@pytest.mark.parametrize("offset, honoured", [(-60, False), (3600, True), (None, True)])
def test_evaluate__override_expiry__only_live_overrides_count(offset, honoured):
    # Given
    expires_at = None if offset is None else time.time() + offset
    rules = ruleset(
        flag_data(
            overrides=[
                {"merchant": "pilot", "variation": "on", "expires_at": expires_at}
            ]
        )
    )
    # When
    result = engine.evaluate(rules, "f", {"merchant": "pilot"})
    # Then
    expected = (
        (True, "TARGETING_MATCH", "override")
        if honoured
        else (False, "STATIC", "default")
    )
    assert (result.value, result.reason, result.level) == expected


def test_evaluate__other_merchant_has_override__default_for_this_one():
    # Given
    rules = ruleset(flag_data(overrides=[{"merchant": "pilot", "variation": "on"}]))
    # When
    result = engine.evaluate(rules, "f", {"merchant": "other"})
    # Then
    assert (result.value, result.level) == (False, "default")


CLAUSE_CASES = [
    # (clause, attribute value, matches)
    (clause("tier", "in", "gold", "silver"), "silver", True),
    (clause("tier", "in", "gold"), "bronze", False),
    (clause("tier", "in", "gold"), ["bronze", "gold"], True),
    (clause("tier", "in", "gold"), {"nested": "gold"}, False),
    (clause("n", "in", 3), 3, True),
    (clause("n", "in", 3), 3.0, True),
    (clause("flagged", "in", True), True, True),
    (clause("flagged", "in", 1), True, False),
    (clause("flagged", "in", True), 1, False),
    (clause("tier", "in", "gold", negate=True), "bronze", True),
    (clause("tier", "in", "gold", negate=True), "gold", False),
    (clause("country", "starts_with", "K"), "KR", True),
    (clause("country", "starts_with", "K"), "US", False),
    (clause("email", "ends_with", "@acme.com"), "ops@acme.com", True),
    (clause("email", "ends_with", "@acme.com"), "ops@acme.co", False),
    (clause("name", "contains", "shop"), "big-shop-1", True),
    (clause("name", "contains", "shop"), 12, False),
    (clause("plan", "matches", r"^pro(-\d+)?$"), "pro-12", True),
    (clause("plan", "matches", r"^pro(-\d+)?$"), "basic", False),
    (clause("gmv", "lt", 100), 99.5, True),
    (clause("gmv", "lt", 100), 100, False),
    (clause("gmv", "lte", 100), 100, True),
    (clause("gmv", "gt", 100), 101, True),
    (clause("gmv", "gt", 100), 100, False),
    (clause("gmv", "gte", 100), 100, True),
    (clause("gmv", "gte", 100), "1000", False),
    (clause("gmv", "gt", 0), True, False),
    (clause("plan", "exists"), "anything", True),
    (clause("plan", "exists"), 0, True),
    (clause("plan", "exists", negate=True), "anything", False),
]


@pytest.mark.parametrize(
    "rule_clause, value, matches",
    CLAUSE_CASES,
    ids=[f"{c['op']}{'-not' if c['negate'] else ''}-{v!r}" for c, v, _ in CLAUSE_CASES],
)
def test_evaluate__clause_operator__matches_as_documented(rule_clause, value, matches):
    # Given
    rules = ruleset(flag_data(rules=[rule(rule_clause)]))
    # When
    result = engine.evaluate(
        rules, "f", {"merchant": "x", rule_clause["attribute"]: value}
    )
    # Then
    assert result.level == ("rule:1" if matches else "default")


@pytest.mark.parametrize(
    "op, values",
    [
        ("in", ["gold"]),
        ("starts_with", ["g"]),
        ("gt", [0]),
        ("matches", ["."]),
    ],
)
@pytest.mark.parametrize("negate", [False, True])
def test_evaluate__missing_attribute__matches_nothing_even_negated(op, values, negate):
    # Given
    rules = ruleset(flag_data(rules=[rule(clause("tier", op, *values, negate=negate))]))
    # When
    result = engine.evaluate(rules, "f", {"merchant": "x"})
    # Then
    assert result.level == "default"


def test_evaluate__exists_negated_on_missing_attribute__matches():
    # Given
    rules = ruleset(flag_data(rules=[rule(clause("plan", "exists", negate=True))]))
    # When
    result = engine.evaluate(rules, "f", {"merchant": "x"})
    # Then
    assert result.level == "rule:1"


@pytest.mark.parametrize(
    "context, level",
    [
        ({"merchant": "x", "tier": "gold"}, "rule:1"),
        ({"merchant": "x", "tier": "silver"}, "default"),
        ({"merchant": "x"}, "default"),
    ],
)
def test_evaluate__segment_clause__matches_segment_members(context, level):
    # Given
    rules = ruleset(
        flag_data(rules=[rule({"op": "segment", "values": ["gold"]})]), segments=GOLD
    )
    # When
    result = engine.evaluate(rules, "f", context)
    # Then
    assert result.level == level


@pytest.mark.parametrize("tier, level", [("gold", "default"), ("silver", "rule:1")])
def test_evaluate__negated_segment__matches_non_members(tier, level):
    # Given
    rules = ruleset(
        flag_data(rules=[rule({"op": "segment", "values": ["gold"], "negate": True})]),
        segments=GOLD,
    )
    # When
    result = engine.evaluate(rules, "f", {"merchant": "x", "tier": tier})
    # Then
    assert result.level == level


def test_evaluate__segment_with_several_clauses__all_must_match():
    # Given
    segments = {
        "kr-gold": {
            "clauses": [clause("tier", "in", "gold"), clause("country", "in", "KR")]
        }
    }
    rules = ruleset(
        flag_data(rules=[rule({"op": "segment", "values": ["kr-gold"]})]),
        segments=segments,
    )
    # When
    both = engine.evaluate(
        rules, "f", {"merchant": "x", "tier": "gold", "country": "KR"}
    )
    one = engine.evaluate(
        rules, "f", {"merchant": "x", "tier": "gold", "country": "US"}
    )
    # Then
    assert (both.level, one.level) == ("rule:1", "default")


def test_evaluate__rule_with_several_clauses__all_must_match():
    # Given
    rules = ruleset(
        flag_data(
            rules=[rule(clause("tier", "in", "gold"), clause("country", "in", "KR"))]
        )
    )
    # When
    both = engine.evaluate(
        rules, "f", {"merchant": "x", "tier": "gold", "country": "KR"}
    )
    one = engine.evaluate(rules, "f", {"merchant": "x", "tier": "gold"})
    # Then
    assert (both.level, one.level) == ("rule:1", "default")


@pytest.mark.parametrize(
    "context, level",
    [
        ({"merchant": "known"}, "rule:1"),  # registry fills tier
        ({"merchant": "known", "tier": "bronze"}, "default"),  # the request wins
        ({"merchant": "stranger"}, "default"),  # unknown: request only
        ({"merchant": "stranger", "tier": "gold"}, "rule:1"),
    ],
)
def test_evaluate__registry_attributes__fill_missing_request_attributes(context, level):
    # Given
    rules = ruleset(
        flag_data(rules=[rule(clause("tier", "in", "gold"))]),
        merchants={"known": {"tier": "gold"}},
    )
    # When
    result = engine.evaluate(rules, "f", context)
    # Then
    assert result.level == level


def test_evaluate__bucket_by_attribute__same_bucket_for_same_value():
    # Given
    rules = ruleset(flag_data(fallthrough=split(50_000), bucket_by="org"))
    # When
    answers = {
        engine.evaluate(rules, "f", {"merchant": f"m{i}", "org": "acme"}).value
        for i in range(50)
    }
    missing = engine.evaluate(rules, "f", {"merchant": "m1"}, "dflt")
    # Then
    assert len(answers) == 1
    assert engine.evaluate(rules, "f", {"merchant": "m1", "org": "acme"}).value == (
        engine.bucket("f", "acme") < 50_000
    )
    assert missing.error_code == "TARGETING_KEY_MISSING"


def test_compile_ruleset__archived_flag_absent__flag_not_found():
    # Given the mappers leave archived flags out of the data
    rules = ruleset(flag_data("live"))
    # When
    result = engine.evaluate(rules, "archived_flag", {"merchant": "x"}, False)
    # Then
    assert result.error_code == "FLAG_NOT_FOUND"


def test_evaluate_all__every_flag__in_key_order():
    # Given
    rules = ruleset(flag_data("b"), flag_data("a", fallthrough={"variation": "on"}))
    # When
    results = engine.evaluate_all(rules, {"merchant": "x"})
    # Then
    assert [(r.flag_key, r.value) for r in results] == [("a", True), ("b", False)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
GARBAGE_RULESET = ruleset(
    flag_data(
        "f",
        rules=[
            rule(clause("tier", "in", "gold", 1)),
            rule(clause("plan", "matches", "^p"), serve=split(30_000)),
            rule({"op": "segment", "values": ["gold"]}),
        ],
        fallthrough=split(10_000),
        overrides=[{"merchant": "pilot", "variation": "on", "expires_at": 1.0}],
    ),
    flag_data("g", bucket_by="org", fallthrough=split(60_000)),
    segments=GOLD,
    merchants={"pilot": {"tier": "gold"}},
)


@settings(max_examples=300, deadline=None)
@given(
    flag_key=st.one_of(st.sampled_from(["f", "g"]), json_values),
    context=st.one_of(
        json_values,
        st.dictionaries(
            st.sampled_from(["merchant", "tier", "plan", "org", "x"]), json_values
        ),
    ),
    value_type=st.one_of(
        st.none(), st.sampled_from(engine.VALUE_TYPES), st.text(max_size=3)
    ),
)
def test_evaluate__arbitrary_input__never_raises(flag_key, context, value_type):
    # Given a ruleset with every kind of rule
    # When
    result = engine.evaluate(
        GARBAGE_RULESET, flag_key, context, "dflt", value_type=value_type
    )
    # Then
    assert isinstance(result, engine.Evaluation)
    assert result.reason in {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "ERROR"}
    assert (result.reason == "ERROR") == (result.error_code is not None)
    if result.reason == "ERROR":
        assert result.value == "dflt"


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value_type, variations",
    [
        ("bool", BOOL),
        ("bool", list(reversed(BOOL))),
        ("string", THEMES),
        ("number", [{"key": "fast", "value": 100}, {"key": "slow", "value": 2.5}]),
        (
            "json",
            [{"key": "a", "value": {"x": [1, None, "y"]}}, {"key": "b", "value": None}],
        ),
    ],
)
def test_validate_variations__valid__accepted(value_type, variations):
    # Given / When
    normalized = validation.validate_variations(value_type, variations)
    # Then
    assert [v["key"] for v in normalized] == [v["key"] for v in variations]


@pytest.mark.parametrize(
    "value_type, variations, field",
    [
        (
            "bool",
            [{"key": "on", "value": False}, {"key": "off", "value": True}],
            "variations",
        ),
        ("bool", [{"key": "on", "value": True}], "variations"),
        (
            "bool",
            [{"key": "on", "value": 1}, {"key": "off", "value": 0}],
            "variations[0].value",
        ),
        (
            "bool",
            [{"key": "yes", "value": True}, {"key": "off", "value": False}],
            "variations",
        ),
        ("string", [{"key": "a", "value": 1}], "variations[0].value"),
        ("number", [{"key": "a", "value": True}], "variations[0].value"),
        ("number", [{"key": "a", "value": math.inf}], "variations[0].value"),
        ("number", [{"key": "a", "value": math.nan}], "variations[0].value"),
        ("number", [{"key": "a", "value": "1"}], "variations[0].value"),
        ("json", [{"key": "a", "value": {1: "int key"}}], "variations[0].value"),
        ("json", [{"key": "a", "value": {"x": math.nan}}], "variations[0].value"),
        ("json", [{"key": "a", "value": object()}], "variations[0].value"),
        (
            "string",
            [{"key": "a", "value": "x"}, {"key": "a", "value": "y"}],
            "variations[1].key",
        ),
        ("string", [{"key": "has space", "value": "x"}], "variations[0].key"),
        ("string", [], "variations"),
        ("string", [{"value": "x"}], "variations[0]"),
        ("text", [{"key": "a", "value": "x"}], "value_type"),
    ],
)
def test_validate_variations__invalid__refused_with_field(
    value_type, variations, field
):
    # Given / When
    with pytest.raises(engine.RulesetError) as error:
        validation.validate_variations(value_type, variations)
    # Then
    assert error.value.field == field


@pytest.mark.parametrize(
    "serve, field",
    [
        (
            {
                "split": [
                    {"variation": "on", "weight": 10_000},
                    {"variation": "off", "weight": 80_000},
                ]
            },
            "fallthrough.split",
        ),
        ({"split": [{"variation": "on", "weight": 100_001}]}, "fallthrough.split"),
        (
            {
                "split": [
                    {"variation": "on", "weight": 50_000},
                    {"variation": "nope", "weight": 50_000},
                ]
            },
            "fallthrough.split[1].variation",
        ),
        (
            {
                "split": [
                    {"variation": "on", "weight": 50_000},
                    {"variation": "on", "weight": 50_000},
                ]
            },
            "fallthrough.split[1].variation",
        ),
        (
            {
                "split": [
                    {"variation": "on", "weight": 50.5},
                    {"variation": "off", "weight": 49_999.5},
                ]
            },
            "fallthrough.split[0].weight",
        ),
        (
            {
                "split": [
                    {"variation": "on", "weight": -1},
                    {"variation": "off", "weight": 100_001},
                ]
            },
            "fallthrough.split[0].weight",
        ),
        ({"split": []}, "fallthrough.split"),
        ({"variation": "nope"}, "fallthrough.variation"),
        ({"variation": "on", "split": []}, "fallthrough"),
        ("on", "fallthrough"),
    ],
)
def test_validate_serve__invalid__refused(serve, field):
    # Given / When
    with pytest.raises(engine.RulesetError) as error:
        validation.validate_serve(serve, ["on", "off"], "fallthrough")
    # Then
    assert error.value.field == field


def test_validate_serve__weights_sum_to_100000__accepted():
    # Given / When
    normalized = validation.validate_serve(split(12_345), ["on", "off"], "fallthrough")
    # Then
    assert sum(arm["weight"] for arm in normalized["split"]) == engine.BUCKETS


@pytest.mark.parametrize(
    "bad_clause, field",
    [
        (clause("plan", "matches", "("), "r.values[0]"),
        (clause("plan", "like", "x"), "r.op"),
        (clause("", "in", "x"), "r.attribute"),
        (clause("plan", "in"), "r.values"),
        (clause("gmv", "gt", "10"), "r.values"),
        (clause("plan", "starts_with", 1), "r.values"),
        (clause("plan", "in", {"a": 1}), "r.values"),
        ({"op": "segment", "values": ["unknown"]}, "r.values"),
        ("tier=gold", "r"),
    ],
)
def test_validate_clause__invalid__refused(bad_clause, field):
    # Given / When
    with pytest.raises(engine.RulesetError) as error:
        validation.validate_clause(bad_clause, "r", ["gold"])
    # Then
    assert error.value.field == field


def test_validate_rules__unknown_variation_in_rule__refused():
    # Given
    rules = [rule(clause("tier", "in", "gold"), serve={"variation": "maybe"})]
    # When
    with pytest.raises(engine.RulesetError) as error:
        validation.validate_rules(rules, ["on", "off"], [])
    # Then
    assert error.value.field == "rules[0].serve.variation"


@pytest.mark.parametrize(
    "percent, weight",
    [
        (0, 0),
        (100, 100_000),
        (10, 10_000),
        (0.001, 1),
        (12.345, 12_345),
        (99.999, 99_999),
        (50.5, 50_500),
    ],
)
def test_percent_to_weight__valid__thousandths_of_a_percent(percent, weight):
    # Given / When / Then
    assert validation.percent_to_weight(percent) == weight


@pytest.mark.parametrize(
    "percent", [-0.001, 100.001, 0.0001, 12.3456, math.nan, math.inf, True, "10", None]
)
def test_percent_to_weight__invalid__refused(percent):
    # Given / When / Then
    with pytest.raises(engine.RulesetError):
        validation.percent_to_weight(percent)
