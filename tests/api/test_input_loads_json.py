"""loads_json: the fast path for plain documents refuses what the walk does."""

from __future__ import annotations

import pytest

from controlplane.api.input import MAX_JSON_DEPTH, UntrustedInput, loads_json


@pytest.mark.parametrize(
    "raw, field",
    [
        (b'{"a": "\\ud800"}', "a"),
        ('{"a": "\ud800"}', "a"),  # a str that holds the surrogate itself
        ('{"a": "\ud800"}'.encode("utf-8", "surrogatepass"), "a"),
        ('{"a": ["x", "\udfff"]}'.encode("utf-16-le", "surrogatepass"), "a[1]"),
        (b'{"flags": [{"key": "x", "default": 1e999}]}', "flags[0].default"),
        (b'{"d": -Infinity}', "d"),
        (b'{"d": NaN}', "d"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "[0]"),
        (b"[" * 5000 + b"]" * 5000, ""),
    ],
)
def test_loads_json__unacceptable__refused_naming_the_field(raw, field):
    # When
    with pytest.raises(UntrustedInput) as refused:
        loads_json(raw)
    # Then
    assert refused.value.field.startswith(field)
    assert "\ud800" not in refused.value.message


@pytest.mark.parametrize(
    "raw, value",
    [
        (b'{"context": {"merchant": "m-1"}}', {"context": {"merchant": "m-1"}}),
        ('{"m": "café 😀"}'.encode(), {"m": "café 😀"}),
        (b'{"m": "\\ud83d\\ude00"}', {"m": "😀"}),  # a valid surrogate pair
        (b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH, None),
    ],
)
def test_loads_json__acceptable__parsed(raw, value):
    # When
    parsed = loads_json(raw)
    # Then
    assert parsed == value or value is None


def test_loads_json__nul_where_refused__refused():
    # When
    with pytest.raises(UntrustedInput) as refused:
        loads_json(b'{"k": "a\\u0000"}', allow_nul=False)
    # Then
    assert refused.value.field == "k"
