"""Stale flags: usage counted on the evaluation path, flushed, and listed.

Evaluations go through real HTTP: Django's eval views (pytest-django's
``client``) and the hot path (``HotPathClient``, the combined WSGI app).
"""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from flags import services
from flags.hotpath import usage
from flags.models import Flag, FlagState, FlagUsage, Merchant
from flags.services.usage import flag_usage_upsert
from tests.apikeys.fixtures import (  # noqa: F401
    auth,
    server_key,
    server_key_factory,
    serving_reset,
)
from tests.flags.test_hotpath_client import HotPathClient

EVALUATE = "/api/v1/evaluate"
OFREP = "/ofrep/v1/evaluate/flags"


@pytest.fixture(autouse=True)
def fresh_usage():
    usage.reset()
    usage.set_sink(None)
    yield
    usage.reset()
    usage.set_sink(None)


@pytest.fixture(params=["django", "hotpath"])
def eval_client(request) -> Client:
    return Client() if request.param == "django" else HotPathClient()


@pytest.fixture
def two_flags(production, flag_factory):
    first = flag_factory("sequential_workflow")
    second = flag_factory("checkout_theme")
    for flag in (first, second):
        services.flag_state_set_enabled(
            actor=SYSTEM, flag=flag, environment=production, enabled=True
        )
    return first, second


def _evaluate(client: Client, auth: dict, flags: list[str] | None = None):
    body: dict = {"context": {"merchant": "m-1"}}
    if flags is not None:
        body["flags"] = flags
    return client.post(
        EVALUATE, data=json.dumps(body), content_type="application/json", **auth
    )


def _usage() -> dict[tuple[str, str], tuple[int, dt.datetime]]:
    return {
        (row.environment.key, row.flag.key): (row.count, row.last_evaluated_at)
        for row in FlagUsage.objects.select_related("flag", "environment")
    }


# -- counting and flushing --------------------------------------------------------


def test_usage__evaluations_over_http__counted_then_flushed_in_one_upsert(
    eval_client, two_flags, auth, production
):
    # Given
    for _ in range(3):
        assert _evaluate(eval_client, auth, ["sequential_workflow"]).status_code == 200
    assert _evaluate(eval_client, auth).status_code == 200  # every flag
    ofrep = eval_client.post(
        OFREP,
        data=json.dumps({"context": {"targetingKey": "m-1"}}),
        content_type="application/json",
        **auth,
    )
    assert ofrep.status_code == 200
    _evaluate(eval_client, auth, ["no_such_flag"])  # a caller's made-up key
    assert usage.pending() == {
        ("production", "sequential_workflow"): 5,
        ("production", "checkout_theme"): 2,
    }
    flushed_at = timezone.now()
    # When
    with CaptureQueriesContext(connection) as queries:
        rows = usage.flush(now=flushed_at)
    # Then
    writes = [q["sql"] for q in queries if "INSERT" in q["sql"].upper()]
    assert (rows, len(writes)) == (2, 1)
    assert _usage() == {
        ("production", "sequential_workflow"): (5, flushed_at),
        ("production", "checkout_theme"): (2, flushed_at),
    }
    assert usage.pending() == {}
    assert usage.flush() == 0


def test_usage__second_flush__adds_counts_and_keeps_latest_time(
    client, two_flags, auth
):
    # Given
    first_at = timezone.now() - dt.timedelta(minutes=5)
    _evaluate(client, auth, ["sequential_workflow"])
    usage.flush(now=first_at)
    _evaluate(client, auth, ["sequential_workflow"])
    _evaluate(client, auth, ["sequential_workflow"])
    # When
    usage.flush(now=first_at + dt.timedelta(minutes=1))
    # Then
    count, when = _usage()[("production", "sequential_workflow")]
    assert (count, when) == (3, first_at + dt.timedelta(minutes=1))


def test_usage_upsert__two_processes_out_of_order__max_time_and_summed_counts(
    two_flags, production
):
    # Given: two workers flush their own counts; the later one's write lands first
    now = timezone.now()
    flag_usage_upsert(counts={("production", "sequential_workflow"): 7}, at=now)
    # When
    flag_usage_upsert(
        counts={
            ("production", "sequential_workflow"): 4,
            ("production", "checkout_theme"): 1,
            ("production", "deleted_flag"): 9,
            ("nowhere", "sequential_workflow"): 9,
        },
        at=now - dt.timedelta(seconds=30),
    )
    # Then
    assert _usage() == {
        ("production", "sequential_workflow"): (11, now),
        ("production", "checkout_theme"): (1, now - dt.timedelta(seconds=30)),
    }


def test_usage__warm_evaluation__no_query(
    eval_client, two_flags, auth, settings, django_assert_num_queries
):
    # Given: warm caches, no version check due
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "RULESET_POLL_INTERVAL": 3600,
        "RULESET_STALE_AFTER": 3600,
        "APIKEY_CACHE_TTL": 3600,
    }
    _evaluate(eval_client, auth, ["sequential_workflow"])
    # When
    with django_assert_num_queries(0):
        for _ in range(20):
            response = _evaluate(eval_client, auth, ["sequential_workflow"])
    # Then
    assert response.status_code == 200
    assert usage.pending() == {("production", "sequential_workflow"): 21}


def test_usage_record__four_threads__no_evaluation_lost(db):
    # Given
    import threading

    from flags import engine

    answers = [engine.Evaluation("busy", True, "on", "STATIC", "default", 1)] * 10
    start = threading.Barrier(4)

    def serve() -> None:
        start.wait()
        for _ in range(2_000):
            usage.record("production", answers, {"busy"})

    threads = [threading.Thread(target=serve) for _ in range(4)]
    # When
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then
    assert usage.pending() == {("production", "busy"): 80_000}
    assert usage.pending() == {("production", "busy"): 80_000}  # reads not counted


# -- relays: counts go upstream ------------------------------------------------


def test_usage__relay_forwarder__counts_reach_upstream_over_http(
    live_server, two_flags, server_key, production
):
    # Given: a relay process's counts (it has no database)
    from flags import engine
    from flags.relay.usage import UsageForwarder

    answers = [
        engine.Evaluation("sequential_workflow", True, "on", "STATIC", "default", 1)
    ] * 3
    usage.record("production", answers, {"sequential_workflow"})
    usage.set_sink(UsageForwarder(live_server.url, server_key))
    # When
    rows = usage.flush()
    # Then
    assert rows == 1
    assert _usage()[("production", "sequential_workflow")][0] == 3
    assert usage.pending() == {}


def test_usage__relay_forwarder__upstream_down__counts_kept(two_flags):
    # Given
    from flags import engine
    from flags.relay.usage import UsageForwarder

    answer = engine.Evaluation("checkout_theme", "x", "on", "STATIC", "default", 1)
    usage.record("production", [answer], {"checkout_theme"})
    usage.set_sink(UsageForwarder("http://127.0.0.1:9", "cp_srv_x", timeout=1))
    # When
    with pytest.raises(OSError):
        usage.flush()
    # Then
    assert usage.pending() == {("production", "checkout_theme"): 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"counts": [1]}, "counts"),
        ({"counts": {"sequential_workflow": -1}}, "counts.sequential_workflow"),
        ({"counts": {"sequential_workflow": 1.5}}, "counts.sequential_workflow"),
        ({"counts": {"sequential_workflow": 10**13}}, "counts.sequential_workflow"),
        ({"counts": {"x" * 101: 1}}, "counts"),
        ({"counts": {f"f{i}": 1 for i in range(10_001)}}, "counts"),
        ([], "counts"),
    ],
)
def test_usage_report_api__bad_counts__400_with_field(
    client, two_flags, auth, body, field
):
    # When
    response = client.post(
        "/api/v1/usage", data=json.dumps(body), content_type="application/json", **auth
    )
    # Then
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not FlagUsage.objects.exists()


def test_usage_report_api__no_or_management_key__401_403(client, two_flags, admin_user):
    # Given
    from controlplane.apikeys.services import apikey_create

    _, management = apikey_create(
        actor=SYSTEM, name="ci", scope="management", user=admin_user
    )
    body = json.dumps({"counts": {"sequential_workflow": 1}})
    # When
    anonymous = client.post("/api/v1/usage", data=body, content_type="application/json")
    wrong = client.post(
        "/api/v1/usage",
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {management}",
    )
    # Then
    assert (anonymous.status_code, wrong.status_code) == (401, 403)
    assert not FlagUsage.objects.exists()


# -- stale flags ----------------------------------------------------------------


def _age(flag: Flag, days: int) -> None:
    """Pretend ``flag`` and its states were last changed ``days`` days ago.

    The only way to get an old row without a clock to swap: the timestamps
    are auto_now, so they are set directly (test set-up, not a change).
    """
    when = timezone.now() - dt.timedelta(days=days)
    Flag.objects.filter(pk=flag.pk).update(created_at=when)
    FlagState.objects.filter(flag=flag).update(updated_at=when)


@pytest.fixture
def fleet(environments, flag_factory, merchant_factory):
    """Five flags, forty days old, in production and staging:

    - done: on for everyone, evaluated today;
    - dead: a split, but nobody evaluated it for 40 days;
    - rolling: a 50% split, evaluated today;
    - pilot: on for everyone but one merchant override, evaluated today;
    - fresh: on for everyone, changed yesterday, evaluated today.
    """
    merchant_factory("m-1")
    flags = {}
    for key in ("done", "dead", "rolling", "pilot", "fresh"):
        flag = flag_factory(key)
        flags[key] = flag
        for environment in environments.values():
            services.flag_state_set_enabled(
                actor=SYSTEM, flag=flag, environment=environment, enabled=True
            )
            if key in ("dead", "rolling"):
                services.flag_state_set_percentage(
                    actor=SYSTEM, flag=flag, environment=environment, percentage=50
                )
            else:
                services.flag_state_serve(
                    actor=SYSTEM, flag=flag, environment=environment, variation="on"
                )
    for environment in environments.values():
        services.override_set(
            actor=SYSTEM,
            flag=flags["pilot"],
            environment=environment,
            merchant=Merchant.objects.get(key="m-1"),
            variation="off",
        )
    for flag in flags.values():
        _age(flag, 40)
    FlagState.objects.filter(flag=flags["fresh"]).update(
        updated_at=timezone.now() - dt.timedelta(days=1)
    )
    now = timezone.now()
    flag_usage_upsert(
        counts={
            (env, key): 1
            for env in environments
            for key in ("done", "rolling", "pilot", "fresh")
        },
        at=now,
    )
    flag_usage_upsert(
        counts={(env, "dead"): 1 for env in environments},
        at=now - dt.timedelta(days=40),
    )
    return flags


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command("flag", *args, stdout=out)
    return out.getvalue()


def test_flag_stale__30_days__lists_one_variation_and_unused_with_archive_command(
    fleet,
):
    # When
    output = _run("stale", "--days", "30")
    # Then
    lines = output.splitlines()
    assert lines[0] == "2 stale flag(s) for 30 days:"
    assert lines[1] == "dead"
    assert lines[2].startswith("  production: not evaluated since ")
    assert lines[3].startswith("  staging: not evaluated since ")
    assert lines[4] == "  archive: manage.py flag archive dead"
    assert lines[5] == "done"
    assert lines[6].startswith("  production: serves 'on' to everyone since ")
    assert lines[8] == "  archive: manage.py flag archive done"
    for key in ("rolling", "pilot", "fresh"):
        assert key not in output


def test_flag_stale__longer_than_age__none_and_archive_command_works(fleet):
    # When
    quiet = _run("stale", "--days", "60")
    archived = _run("archive", "done", "--actor", "ops")
    after = _run("stale", "--days", "30", "--environment", "production")
    # Then
    assert quiet == "No stale flags for 60 days.\n"
    assert archived == "done: archived\n"
    assert Flag.objects.get(key="done").archived is True
    assert "archive: manage.py flag archive dead" in after
    assert "\ndone\n" not in after


def test_flag_stale__override_removed_recently__not_stale_yet(fleet, production):
    # Given: the pilot override went away today in every environment
    for environment in Flag.objects.get(key="pilot").states.all():
        services.override_remove(
            actor=SYSTEM,
            flag=fleet["pilot"],
            environment=environment.environment,
            merchant=Merchant.objects.get(key="m-1"),
        )
    # When
    output = _run("stale", "--days", "30")
    # Then
    assert "pilot" not in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--days", "0"), "--days: must be a whole number"),
        (("--days", "ten"), "--days: must be a whole number"),
        (("--days", "99999999999999999999"), "--days: must be a whole number"),
        (("--environment", "nowhere"), "unknown environment 'nowhere'"),
    ],
)
def test_flag_stale__bad_arguments__command_error(fleet, args, message):
    with pytest.raises(CommandError, match=message):
        _run("stale", *args)


def test_flag_archive__unknown_flag__command_error(db):
    with pytest.raises(CommandError, match="unknown flag 'nope'"):
        _run("archive", "nope")


def test_admin_stale_filter__30_days__lists_stale_flags_only(admin_client, fleet):
    # When
    page = admin_client.get("/admin/flags/flag/", {"stale_days": "30"})
    everything = admin_client.get("/admin/flags/flag/")
    # Then
    assert page.status_code == 200
    listed = {flag.key for flag in page.context["cl"].result_list}
    assert listed == {"dead", "done"}
    assert len(everything.context["cl"].result_list) == 5
    assert "stale for" in page.content.decode()
