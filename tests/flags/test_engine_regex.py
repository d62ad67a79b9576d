"""``matches`` clauses: RE2 (linear time), compiled once, refused when unsafe.

No database: rulesets are compiled from plain data, as ``mappers`` builds it.
"""

from __future__ import annotations

import time

import pytest
import re2

from flags import engine, validation

BOOL = [{"key": "on", "value": True}, {"key": "off", "value": False}]
CATASTROPHIC = "^(a+)+$"  # exponential for a backtracking engine
NEARLY_MATCHING = "a" * 27 + "b"  # 28 characters: 8.3 s with Python's re


def regex_ruleset(*patterns: str, segment: bool = False) -> engine.Ruleset:
    clause = {"attribute": "plan", "op": "matches", "values": list(patterns)}
    segments = {}
    if segment:
        segments = {"regex": {"clauses": [clause]}}
        clause = {"op": "segment", "values": ["regex"]}
    return engine.compile_ruleset(
        {
            "environment": "production",
            "version": 1,
            "segments": segments,
            "flags": [
                {
                    "key": "f",
                    "value_type": "bool",
                    "variations": BOOL,
                    "enabled": True,
                    "off_variation": "off",
                    "rules": [{"clauses": [clause], "serve": {"variation": "on"}}],
                    "fallthrough": {"variation": "off"},
                    "bucket_by": "merchant",
                },
                {
                    "key": "g",
                    "value_type": "bool",
                    "variations": BOOL,
                    "enabled": True,
                    "off_variation": "off",
                    "rules": [],
                    "fallthrough": {"variation": "on"},
                    "bucket_by": "merchant",
                },
            ],
        }
    )


@pytest.mark.parametrize("segment", [False, True], ids=["rule", "segment"])
def test_evaluate__catastrophic_pattern__answers_in_well_under_a_second(segment):
    # Given
    rules = regex_ruleset(CATASTROPHIC, segment=segment)
    # When
    started = time.perf_counter()
    miss = engine.evaluate(rules, "f", {"merchant": "m", "plan": NEARLY_MATCHING})
    hit = engine.evaluate(rules, "f", {"merchant": "m", "plan": "a" * 28})
    elapsed = time.perf_counter() - started
    # Then: a correctness bound (linear time), not a benchmark
    assert elapsed < 0.5
    assert (miss.value, miss.level) == (False, "default")
    assert (hit.value, hit.level) == (True, "rule:1")


def test_compile_ruleset__matches_clause__pattern_compiled_once_not_per_evaluation(
    monkeypatch,
):
    # Given
    rules = regex_ruleset(r"^pro-\d+$")
    compiled: list[str] = []
    monkeypatch.setattr(
        re2,
        "compile",
        lambda *args, **kwargs: compiled.append(args[0]),
    )
    # When
    answers = [
        engine.evaluate(rules, "f", {"merchant": f"m{i}", "plan": f"pro-{i}"})
        for i in range(100)
    ]
    # Then
    assert compiled == []
    assert {answer.level for answer in answers} == {"rule:1"}


@pytest.mark.parametrize(
    "pattern, message",
    [
        ("(", "bad regular expression"),
        (r"(a)\1", "bad regular expression"),  # backreference: not linear
        (r"(?=a)b", "bad regular expression"),  # look-ahead: not linear
        ("a" * (engine.MAX_PATTERN_LENGTH + 1), "longer than"),
        (".{1000}", "too complex"),  # 7 characters, 8,004 instructions
        ("\ud800", "not valid text"),  # a lone surrogate has no UTF-8 form
    ],
    ids=[
        "syntax",
        "backreference",
        "lookahead",
        "too-long",
        "too-complex",
        "surrogate",
    ],
)
def test_validate_clause__pattern_re2_refuses__field_names_the_value(pattern, message):
    # Given
    clause = {"attribute": "plan", "op": "matches", "values": ["^ok$", pattern]}
    # When
    with pytest.raises(engine.RulesetError) as error:
        validation.validate_clause(clause, "rules[0].clauses[1]", [])
    # Then
    assert error.value.field == "rules[0].clauses[1].values[1]"
    assert message in error.value.message


def test_validate_clause__longest_allowed_pattern__accepted():
    # Given
    pattern = "x" * engine.MAX_PATTERN_LENGTH
    clause = {"attribute": "plan", "op": "matches", "values": [pattern]}
    # When
    normalized = validation.validate_clause(clause, "clauses[0]", None)
    # Then
    assert normalized["values"] == [pattern]


def test_compile_ruleset__pattern_refused_by_re2__only_that_flag_answers_error():
    # Given: data stored before RE2, never validated by it
    rules = regex_ruleset(r"(a)\1")
    # When
    refused = engine.evaluate(rules, "f", {"merchant": "m", "plan": "aa"}, "dflt")
    other = engine.evaluate(rules, "g", {"merchant": "m", "plan": "aa"})
    not_reached = engine.evaluate(rules, "f", {"merchant": "m"})
    # Then
    assert (refused.value, refused.reason, refused.error_code) == (
        "dflt",
        "ERROR",
        "GENERAL",
    )
    assert (other.value, other.level) == (True, "default")
    assert (not_reached.value, not_reached.level) == (False, "default")
