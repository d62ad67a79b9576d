"""The published bucketing vectors in docs/bucketing.md match the engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mmh3
import pytest

from flags import engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "bucketing.md"
ROW = re.compile(
    r"^\|\s*`(?P<flag>\".*\")`\s*\|\s*`(?P<merchant>\".*\")`\s*\|"
    r"\s*(?P<hash>\d+)\s*\|\s*(?P<bucket>\d+)\s*\|\s*$"
)


def published_vectors() -> list[tuple[str, str, int, int]]:
    """Return (flag key, merchant key, unsigned hash, bucket) from the docs table."""
    vectors = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            vectors.append(
                (
                    json.loads(match["flag"]),
                    json.loads(match["merchant"]),
                    int(match["hash"]),
                    int(match["bucket"]),
                )
            )
    return vectors


VECTORS = published_vectors()


def test_published_vectors__docs_table__at_least_24_with_unicode_and_empty_keys():
    # Given
    merchants = [merchant for _, merchant, _, _ in VECTORS]
    # When
    has_unicode = any(not merchant.isascii() for merchant in merchants)
    has_empty_ish = "" in merchants and " " in merchants
    # Then
    assert len(VECTORS) >= 24
    assert has_unicode and has_empty_ish
    assert len(set((f, m) for f, m, _, _ in VECTORS)) == len(VECTORS)


@pytest.mark.parametrize(
    "flag_key, merchant_key, unsigned_hash, expected",
    VECTORS,
    ids=[f"{f}.{m}" for f, m, _, _ in VECTORS],
)
def test_bucket__published_vector__same_bucket(
    flag_key, merchant_key, unsigned_hash, expected
):
    # Given / When
    result = engine.bucket(flag_key, merchant_key)
    # Then
    assert result == expected
    assert mmh3.hash(f"{flag_key}.{merchant_key}".encode(), 0, False) == unsigned_hash
    assert unsigned_hash % engine.BUCKETS == expected


def test_bucket__any_key__in_range_and_stable():
    # Given
    keys = [f"m-{i}" for i in range(2000)]
    # When
    first = [engine.bucket("f", key) for key in keys]
    second = [engine.bucket("f", key) for key in keys]
    # Then
    assert first == second
    assert all(0 <= value < engine.BUCKETS for value in first)
