"""/metrics stays bounded whatever callers send; evaluations counted by level.

Through the real evaluation endpoints (Django test client, real database);
series are counted in prometheus_client's own registry.
"""

from __future__ import annotations

import json

from prometheus_client import REGISTRY

from controlplane.audit.actors import SYSTEM
from flags import engine, metrics, services
from tests.apikeys.fixtures import (  # noqa: F401
    auth,
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)

NATIVE = "/api/v1/evaluate"
OFREP = "/ofrep/v1/evaluate/flags/"
EVALUATIONS = "controlplane_flags_evaluations_total"


def _series() -> int:
    return sum(len(metric.samples) for metric in REGISTRY.collect())


def _native(client, auth, flags, merchant="m-gold", **context):
    body = {"context": {"merchant": merchant, **context}, "flags": flags}
    return client.post(
        NATIVE, data=json.dumps(body), content_type="application/json", **auth
    )


def _ofrep(client, auth, key):
    body = json.dumps({"context": {"targetingKey": "m-gold"}})
    return client.post(OFREP + key, data=body, content_type="application/json", **auth)


def _count(**labels: str) -> float:
    return REGISTRY.get_sample_value(EVALUATIONS, labels) or 0.0


def _evaluation_samples() -> list[dict[str, str]]:
    return [
        sample.labels
        for metric in REGISTRY.collect()
        if metric.name == EVALUATIONS.removesuffix("_total")
        for sample in metric.samples
        if sample.name == EVALUATIONS
    ]


def test_metrics__10000_unknown_flag_keys_native_and_ofrep__series_count_unchanged(
    client, catalog, auth
):
    # Given: every series a refused key can touch exists once already
    assert _native(client, auth, ["warm-up-unknown"]).status_code == 404
    assert _ofrep(client, auth, "warm-up-unknown").status_code == 404
    series, children = _series(), len(metrics._children)
    unknown = _count(
        flag=metrics.UNKNOWN_FLAG, variation="", reason="ERROR", level="error"
    )
    keys = [f"no-such-flag-{n:05d}-{'x' * 24}" for n in range(10_000)]
    # When: 5 native requests of 1,000 keys, then one OFREP request for each
    # of the other 5,000 keys (every 100th is 20,000 characters long)
    for start in range(0, 5_000, 1_000):
        assert _native(client, auth, keys[start : start + 1_000]).status_code == 404
    for n, key in enumerate(keys[5_000:]):
        sent = key + "y" * 20_000 if n % 100 == 0 else key
        assert _ofrep(client, auth, sent).status_code == 404
    # Then
    assert (_series(), len(metrics._children)) == (series, children)
    assert (
        _count(flag=metrics.UNKNOWN_FLAG, variation="", reason="ERROR", level="error")
        == unknown + 10_000
    )
    assert all(
        len(value) <= metrics.MAX_LABEL_LENGTH
        for labels in _evaluation_samples()
        for value in labels.values()
    )


def test_metrics__evaluations_at_each_level__counted_with_collapsed_level(
    client, catalog, auth, production, flag_factory
):
    # Given: a flag whose second rule matches gold merchants, and a flag off
    tiered = flag_factory("tiered")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=tiered, environment=production, enabled=True
    )
    services.flag_state_update(
        actor=SYSTEM,
        flag=tiered,
        environment=production,
        expected_version=None,
        rules=[
            {
                "clauses": [{"attribute": "tier", "op": "in", "values": ["silver"]}],
                "serve": {"variation": "off"},
            },
            {
                "clauses": [{"attribute": "plan", "op": "matches", "values": ["^pro"]}],
                "serve": {"variation": "on"},
            },
        ],
    )
    flag_factory("dormant")  # disabled everywhere: the off level
    wf = "sequential_workflow"
    expected = {
        ("sequential_workflow", "on", "TARGETING_MATCH", "override"): 3,
        ("tiered", "on", "TARGETING_MATCH", "rule"): 2,
        ("sequential_workflow", "off", "STATIC", "default"): 4,
        ("dormant", "off", "DISABLED", "off"): 1,
        (metrics.UNKNOWN_FLAG, "", "ERROR", "error"): 5,
        ("dormant", "", "ERROR", "error"): 1,
    }
    names = ("flag", "variation", "reason", "level")
    before = {key: _count(**dict(zip(names, key, strict=True))) for key in expected}
    # When
    for _ in range(3):
        _native(client, auth, [wf], merchant="m-pilot")
    for _ in range(2):
        _native(client, auth, ["tiered"], plan="pro-annual")
    for _ in range(4):
        _native(client, auth, [wf], merchant="m-other")
    _native(client, auth, ["dormant", "nope-1", "nope-2"])
    _native(client, auth, [{"key": "dormant", "type": "string"}])
    for n in range(3):
        _ofrep(client, auth, f"missing-{n}")
    # Then
    counted = {
        key: _count(**dict(zip(names, key, strict=True))) - before[key]
        for key in expected
    }
    assert counted == expected
    levels = {labels["level"] for labels in _evaluation_samples()}
    assert levels <= {"override", "rule", "default", "off", "error"}


def test_evaluations_counted__long_labels_and_unknown_keys__bounded():
    # Given
    long_variation = "v" * 5_000
    answers = [
        engine.Evaluation("known", 1, long_variation, "STATIC", "default", 1),
        engine.Evaluation("x" * 65_000, None, None, "ERROR", "default", 1, "GENERAL"),
    ]
    # When
    metrics.evaluations_counted(answers, {"known"})
    metrics.ruleset_loaded("e" * 5_000)
    # Then
    assert (
        _count(
            flag="known",
            variation="v" * metrics.MAX_LABEL_LENGTH,
            reason="STATIC",
            level="default",
        )
        >= 1
    )
    assert (
        REGISTRY.get_sample_value(
            "controlplane_flags_ruleset_loads_total",
            {"environment": "e" * metrics.MAX_LABEL_LENGTH},
        )
        >= 1
    )
    assert all(
        len(value) <= metrics.MAX_LABEL_LENGTH
        for labels in _evaluation_samples()
        for value in labels.values()
    )
