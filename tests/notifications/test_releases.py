"""Release events become notices: started, a feature rolled back alone (with
what continues), completed with what was deployed and rolled back."""

from __future__ import annotations

import json

from controlplane.notifications.models import Delivery, Kind
from tests.release_fixtures import (  # noqa: F401 (fixtures)
    CHECK,
    COMPARE_CHECK,
    KEYS,
    release_factory,
    release_flags,
    release_partly_rolled_back,
)

RELEASE_KINDS = [
    Kind.RELEASE_STARTED,
    Kind.RELEASE_PARTIALLY_ROLLED_BACK,
    Kind.RELEASE_ROLLED_BACK,
    Kind.RELEASE_COMPLETED,
    Kind.RELEASE_ABORTED,
]


def test_release__partial_rollback_then_completed__one_notice_each(
    webhook_factory, release_factory
):
    # Given: a destination that takes only the release kinds
    destination, _ = webhook_factory("http://127.0.0.1:9/hook", kinds=RELEASE_KINDS)
    # When: started; the second flag rolled back alone; the first completes
    release = release_factory(
        started=True, name="checkout bundle", checks=[CHECK, COMPARE_CHECK]
    )
    release = release_partly_rolled_back(release)
    # Then: three notices, in order, none of the members' own rollout kinds
    deliveries = list(Delivery.objects.filter(destination=destination).order_by("pk"))
    assert [d.kind for d in deliveries] == [
        Kind.RELEASE_STARTED,
        Kind.RELEASE_PARTIALLY_ROLLED_BACK,
        Kind.RELEASE_COMPLETED,
    ]
    head = f"[production] release {release.pk} 'checkout bundle'"
    link = f" https://cp.example.com/admin/canary/release/{release.pk}/change/"
    started, partial, completed = (d.message for d in deliveries)
    assert started == f"{head} started: {KEYS[0]}, {KEYS[1]}{link}"
    assert partial.startswith(
        f"{head}: {KEYS[1]} rolled back alone at phase 2/3 (50%); "
        f"continuing: {KEYS[0]}: {KEYS[1]}: error_rate_vs_control worse"
    )
    assert partial.endswith(link)
    assert completed == (
        f"{head} completed: deployed {KEYS[0]}; rolled back {KEYS[1]}{link}"
    )
    body = json.loads(deliveries[1].body)
    assert body["kind"] == "release_partially_rolled_back"
    assert body["release_id"] == release.pk
    assert (body["phase"], body["phases"]) == (2, 3)
    assert body["features_rolled_back"] == [KEYS[1]]
    assert body["continuing"] == [KEYS[0]]
    final = json.loads(deliveries[2].body)
    assert final["features_deployed"] == [KEYS[0]]
    assert final["features_rolled_back"] == [KEYS[1]]


def test_release__rollout_kinds_only__release_events_send_nothing(
    webhook_factory, release_factory
):
    # Given: a destination of the rollout kinds alone
    destination, _ = webhook_factory(
        "http://127.0.0.1:9/hook", kinds=[Kind.ROLLOUT_ROLLED_BACK]
    )
    # When
    release_partly_rolled_back(
        release_factory(started=True, checks=[CHECK, COMPARE_CHECK])
    )
    # Then: the member's own rollback notifies; the release's events do not
    kinds = set(
        Delivery.objects.filter(destination=destination).values_list("kind", flat=True)
    )
    assert kinds == {Kind.ROLLOUT_ROLLED_BACK}
