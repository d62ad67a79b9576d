"""The audit diff: snapshots in, readable rows out (pure, no database)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.audit.diff import (
    MAX_DEPTH,
    MISSING,
    Change,
    detail_changes,
    detail_values,
    diff,
    event_changes,
    flatten,
    path_text,
    value_text,
)


def _rows(changes: list[Change]) -> list[tuple[str, object, object]]:
    return [(change.field, change.before, change.after) for change in changes]


STATE_BEFORE = {
    "enabled": True,
    "off_variation": "off",
    "rules": [],
    "fallthrough": {
        "split": [
            {"variation": "on", "weight": 10000},
            {"variation": "off", "weight": 90000},
        ]
    },
    "bucket_by": "key",
    "killed": False,
    "version": 3,
}
STATE_AFTER = {
    **STATE_BEFORE,
    "fallthrough": {
        "split": [
            {"variation": "on", "weight": 50000},
            {"variation": "off", "weight": 50000},
        ]
    },
    "version": 4,
}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            {"name": "Old", "tags": ["a"]},
            {"name": "New", "tags": ["a"]},
            [("name", "Old", "New")],
            id="one-field-changed-others-hidden",
        ),
        pytest.param(
            STATE_BEFORE,
            STATE_AFTER,
            [
                ("fallthrough.split[0].weight", 10000, 50000),
                ("fallthrough.split[1].weight", 90000, 50000),
                ("version", 3, 4),
            ],
            id="nested-split-flattened",
        ),
        pytest.param(
            None,
            {"key": "m-1", "attributes": {"tier": "gold"}},
            [("attributes.tier", MISSING, "gold"), ("key", MISSING, "m-1")],
            id="created-every-field-added",
        ),
        pytest.param(
            {"variation": "on", "note": ""},
            None,
            [("note", "", MISSING), ("variation", "on", MISSING)],
            id="removed-every-field-removed",
        ),
        pytest.param(
            {"tags": ["a", "b"]},
            {"tags": ["a", "b", "c"]},
            [("tags", ["a", "b"], ["a", "b", "c"])],
            id="list-of-plain-values-is-one-value",
        ),
        pytest.param(
            {"rules": [{"variation": "on"}]},
            {"rules": [{"variation": "on"}, {"variation": "off"}]},
            [("rules[1].variation", MISSING, "off")],
            id="list-of-objects-item-by-item",
        ),
        pytest.param(
            {"value": 1}, {"value": True}, [("value", 1, True)], id="one-is-not-true"
        ),
        pytest.param({"value": 1}, {"value": 1.0}, [], id="one-is-one-point-zero"),
        pytest.param(
            {"a": {"b": 1}},
            {"a": 2},
            [("a", MISSING, 2), ("a.b", 1, MISSING)],
            id="dict-became-a-value",
        ),
        pytest.param(
            {"rules": [], "version": 1},
            {"rules": [{"variation": "on"}], "version": 2},
            [("rules[0].variation", MISSING, "on"), ("version", 1, 2)],
            id="empty-list-filled-no-empty-row",
        ),
        pytest.param(
            {"attributes": {"tier": "gold"}},
            {"attributes": {}},
            [("attributes.tier", "gold", MISSING)],
            id="dict-emptied-no-empty-row",
        ),
        pytest.param(
            {"status": "running"},
            {"status": "running"},
            [],
            id="equal-no-rows",
        ),
        pytest.param(
            "running", "paused", [("value", "running", "paused")], id="scalars"
        ),
        pytest.param(
            {"tier.x": 1, "a b": 2},
            {"tier.x": 2, "a b": 3},
            [('["a b"]', 2, 3), ('["tier.x"]', 1, 2)],
            id="odd-keys-quoted",
        ),
    ],
)
def test_diff__snapshots__rows_of_what_changed(before, after, expected):
    # When
    changes = diff(before, after)
    # Then
    assert _rows(changes) == expected


def test_change_kind__added_removed_changed():
    # Given
    changes = diff({"a": 1, "b": 2}, {"b": 3, "c": 4})
    # Then
    assert [(change.field, change.kind) for change in changes] == [
        ("a", "removed"),
        ("b", "changed"),
        ("c", "added"),
    ]


def test_path_text__keys_and_indexes():
    assert path_text(()) == "value"
    assert (
        path_text(("rules", 0, "clauses", 2, "values")) == "rules[0].clauses[2].values"
    )
    assert path_text(("attributes", "x.y")) == 'attributes["x.y"]'
    assert path_text((0, "a")) == "[0].a"


def test_flatten__deeper_than_the_limit__one_leaf():
    # Given
    deep: dict = {}
    node = deep
    for _ in range(MAX_DEPTH + 5):
        node["k"] = {}
        node = node["k"]
    node["v"] = 1
    # When
    leaves = flatten(deep)
    # Then
    assert len(leaves) == 1
    (path,) = leaves
    assert len(path) == MAX_DEPTH


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        pytest.param(
            {"from": "running", "to": "paused", "reason": "ops"},
            [("value", "running", "paused")],
            id="top-level-from-to",
        ),
        pytest.param(
            {"verification": {"from": "verifying", "to": "escalating", "level": 2}},
            [("verification", "verifying", "escalating")],
            id="nested-from-to",
        ),
        pytest.param(
            {"limits": {"before": {"max": 1, "min": 0}, "after": {"max": 2, "min": 0}}},
            [("limits.max", 1, 2)],
            id="pair-of-dicts-flattened",
        ),
        pytest.param(
            {"steps": [{"from": "pending", "to": "running"}]},
            [("steps[0]", "pending", "running")],
            id="inside-a-list",
        ),
        pytest.param({"from": "a"}, [], id="half-a-pair-is-no-change"),
        pytest.param({"from": "a", "to": "a"}, [], id="same-both-sides"),
        pytest.param([], [], id="not-a-dict"),
        pytest.param(None, [], id="none"),
    ],
)
def test_detail_changes__pairs_in_details__rows(details, expected):
    assert _rows(detail_changes(details)) == expected


def test_event_changes__transition__details_pair_repeating_status_left_out():
    # Given: what rollout_transition records
    before, after = {"status": "running"}, {"status": "paused"}
    details = {
        "from": "running",
        "to": "paused",
        "reason": "ops",
        "verification": {"from": "idle", "to": "verifying"},
    }
    # When
    changes = event_changes(before=before, after=after, details=details)
    # Then
    assert _rows(changes) == [
        ("status", "running", "paused"),
        ("details.verification", "idle", "verifying"),
    ]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (MISSING, "—"),
        (None, "null"),
        ("", '""'),
        ("on", "on"),
        (True, "true"),
        (10000, "10000"),
        (["a", "b"], '["a", "b"]'),
        ({"b": 1, "a": "é"}, '{"a": "é", "b": 1}'),
    ],
)
def test_value_text__values__as_a_person_reads_them(value, text):
    assert value_text(value) == text


def test_value_text__long__cut_at_the_limit():
    text = value_text("x" * 1000, limit=50)
    assert len(text) == 50 and text.endswith("…")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=15,
)


@given(value=JSON)
def test_diff__same_value__no_rows(value):
    assert diff(value, value) == []


@given(
    before=st.dictionaries(st.text(max_size=4), JSON, max_size=4),
    after=st.dictionaries(st.text(max_size=4), JSON, max_size=4),
)
def test_diff__applied_to_before__gives_after(before, after):
    # Given
    leaves = flatten(before)
    # When: every row applied to the leaves of before
    for change in diff(before, after):
        if change.after is MISSING:
            del leaves[change.path]
        else:
            leaves[change.path] = change.after
    # Then: the same leaves, but for empty containers whose fields the
    # other side holds (no row says "[] → —" beside the rows of its fields)
    assert _solid(leaves) == _solid(flatten(after))


def _solid(leaves: dict) -> dict:
    return {
        path: value
        for path, value in leaves.items()
        if not (isinstance(value, dict | list) and not value)
    }


@pytest.mark.parametrize(
    ("details", "expected"),
    [
        pytest.param(
            {"from": "running", "to": "paused", "reason": "ops", "phase": 2},
            [("phase", 2), ("reason", "ops")],
            id="pair-left-out-context-kept",
        ),
        pytest.param(
            {"verification": {"from": "a", "to": "b", "level": 2}, "run": 7},
            [("run", 7), ("verification.level", 2)],
            id="nested-pair-left-out",
        ),
        pytest.param({"to": "paused"}, [("to", "paused")], id="half-a-pair-kept"),
        pytest.param({}, [], id="empty"),
        pytest.param(None, [], id="none"),
        pytest.param("text", [("value", "text")], id="not-a-dict"),
    ],
)
def test_detail_values__details__context_rows(details, expected):
    assert detail_values(details) == expected
