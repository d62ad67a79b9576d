"""Audit chains: one per environment plus ``global``, verified together.

Events of different chains interleave in the table; each chain links and
counts on its own, and a break is reported for the chain it is in.
"""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from controlplane.audit.chains import GLOBAL_CHAIN, environment_chain
from controlplane.audit.checkpoints import audit_checkpoint_write
from controlplane.audit.hashing import GENESIS_HASH, canonical_text, chain_hash
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify, audit_chains_verify
from flags import services
from tests.audit.test_chain import raw_delete, raw_update_after, triggers_off

PRODUCTION = environment_chain("production")
STAGING = environment_chain("staging")


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("audit", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


@pytest.fixture
def interleaved(environments, flag_factory, merchant_factory, actor):
    """Events of global, production and staging, written turn by turn."""
    flag = flag_factory("sequential_workflow")
    for percentage in (10, 20, 30):
        for key in ("production", "staging"):
            services.flag_state_set_percentage(
                actor=actor,
                flag=flag,
                environment=environments[key],
                percentage=percentage,
            )
        merchant_factory(f"m-{percentage}")
    return list(AuditEvent.objects.order_by("id"))


def of(events: list[AuditEvent], chain: str) -> list[AuditEvent]:
    return [event for event in events if event.chain == chain]


def test_record_audit_event__environment__joins_its_chain(interleaved):
    # Then: environments and registry changes in global, states in theirs
    assert {event.chain for event in interleaved} == {GLOBAL_CHAIN, PRODUCTION, STAGING}
    for event in interleaved:
        registry = event.action == "environment.created" or not event.environment
        expected = GLOBAL_CHAIN if registry else environment_chain(event.environment)
        assert event.chain == expected


@pytest.mark.parametrize("chain", [GLOBAL_CHAIN, PRODUCTION, STAGING])
def test_record_audit_event__interleaved__each_chain_links_its_own(interleaved, chain):
    # Given
    events = of(interleaved, chain)
    # Then: positions 1..n, each linked to the one before it in its chain
    assert [event.chain_seq for event in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in zip(events, events[1:], strict=False):
        assert after.prev_hash == before.hash
    assert all(json.loads(e.canonical)["chain"] == chain for e in events)


def test_audit_chains_verify__interleaved__every_chain_ok(interleaved):
    # When
    reports = audit_chains_verify()
    combined = audit_chain_verify()
    # Then
    assert [(r.chain, r.ok, r.checked) for r in reports] == [
        (PRODUCTION, True, 3),
        (STAGING, True, 3),
        (GLOBAL_CHAIN, True, len(of(interleaved, GLOBAL_CHAIN))),
    ]
    assert (combined.ok, combined.checked) == (True, len(interleaved))
    assert reports[1].head_id == of(interleaved, STAGING)[-1].pk


def test_audit_chain_verify__edited_in_one_chain__reported_for_that_chain(
    interleaved,
):
    # Given
    victim = of(interleaved, STAGING)[1]
    with triggers_off():
        raw_update_after(victim.pk, {"enabled": True, "tampered": True})
    # When
    report = audit_chain_verify()
    # Then
    by_chain = {r.chain: r for r in report.chains}
    assert (report.ok, report.broken_id, report.chain) == (False, victim.pk, STAGING)
    assert report.problem.endswith(f"(chain {STAGING})")
    assert "edited" in report.problem
    assert report.checked == interleaved.index(victim)
    assert (by_chain[STAGING].checked, by_chain[STAGING].broken_id) == (1, victim.pk)
    assert by_chain[PRODUCTION].ok and by_chain[GLOBAL_CHAIN].ok
    assert by_chain[PRODUCTION].checked == 3  # the others are checked to the end


def test_audit_chain_verify__deleted_in_one_chain__next_of_that_chain_named(
    interleaved,
):
    # Given
    production = of(interleaved, PRODUCTION)
    with triggers_off():
        raw_delete(production[0].pk)
    # When
    report = audit_chain_verify()
    # Then
    assert (report.ok, report.chain, report.broken_id) == (
        False,
        PRODUCTION,
        production[1].pk,
    )
    assert "removed" in report.problem
    assert all(r.ok for r in report.chains if r.chain != PRODUCTION)


def test_audit_chain_verify__two_events_of_a_chain_swapped__reordered(interleaved):
    # Given: the rows of staging's first two events trade places (ids)
    first, second = of(interleaved, STAGING)[:2]
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with triggers_off(), connection.cursor() as cursor:
        for old, new in ((first.pk, -1), (second.pk, first.pk), (-1, second.pk)):
            cursor.execute(f"UPDATE {table} SET id = %s WHERE id = %s", [new, old])
    # When
    report = audit_chain_verify(chain=STAGING)
    # Then
    assert (report.ok, report.broken_id) == (False, first.pk)
    assert "position 2" in report.problem and "removed" in report.problem
    assert audit_chain_verify(chain=PRODUCTION).ok


def test_audit_chain_verify__chain_position_edited__detected(interleaved):
    # Given: an event moved to a later position, its hash left as it was
    victim = of(interleaved, PRODUCTION)[-1]
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET chain_seq = chain_seq + 5 WHERE id = %s", [victim.pk]
        )
    # When
    report = audit_chain_verify(chain=PRODUCTION)
    # Then
    assert (report.ok, report.broken_id) == (False, victim.pk)
    assert "removed" in report.problem


def test_audit_chain_verify__event_moved_to_another_chain__both_notice(interleaved):
    # Given: a production event relabelled as staging's (at a free position:
    # the unique (chain, position) refuses a taken one)
    victim = of(interleaved, PRODUCTION)[1]
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET chain = %s, chain_seq = 99 WHERE id = %s",
            [STAGING, victim.pk],
        )
    # When
    reports = {r.chain: r for r in audit_chains_verify()}
    # Then
    assert not reports[PRODUCTION].ok and not reports[STAGING].ok
    assert reports[STAGING].broken_id == victim.pk
    assert reports[GLOBAL_CHAIN].ok


def test_audit_verify__one_chain_broken__command_names_chain_and_others(
    interleaved,
):
    # Given
    victim = of(interleaved, STAGING)[0]
    with triggers_off():
        raw_update_after(victim.pk, {"tampered": True})
    # When
    with pytest.raises(CommandError) as raised:
        run("verify")
    verbose = io.StringIO()
    with pytest.raises(CommandError):
        call_command("audit", "verify", "--chains", stdout=verbose)
    # Then
    message = str(raised.value)
    assert message.startswith(f"BROKEN: event {victim.pk}: content does not match")
    assert f"(chain {STAGING})" in message
    assert "\n" not in message
    lines = verbose.getvalue().splitlines()
    assert lines[0].split() == ["chain", "events", "verified", "head", "event", "state"]
    assert lines[2].split()[:2] == [PRODUCTION, "3"]
    assert lines[2].endswith(" ok")
    assert lines[3].split()[:2] == [STAGING, "0"]
    assert lines[3].endswith(f"BROKEN at event {victim.pk}")


def test_audit_verify__intact_with_chains__lists_every_chain(interleaved):
    # When
    out = io.StringIO()
    call_command("audit", "verify", "--chains", stdout=out)
    # Then
    lines = out.getvalue().splitlines()
    assert lines[0].split()[0] == "chain"  # the header, then a rule
    assert [line.split()[0] for line in lines[2:5]] == [
        PRODUCTION,
        STAGING,
        GLOBAL_CHAIN,
    ]
    assert lines[-1] == f"OK: {len(interleaved)} events verified"


def test_audit_checkpoint__several_chains__one_line_each(interleaved, tmp_path):
    # Given
    path = tmp_path / "anchors.jsonl"
    # When
    checkpoints = audit_checkpoint_write(path=path)
    # Then
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    heads = {chain: of(interleaved, chain)[-1] for chain in (PRODUCTION, STAGING)}
    assert [c.chain for c in checkpoints] == [PRODUCTION, STAGING, GLOBAL_CHAIN]
    assert [line.get("chain", GLOBAL_CHAIN) for line in lines] == [
        PRODUCTION,
        STAGING,
        GLOBAL_CHAIN,
    ]
    assert "chain" not in lines[2]  # global lines keep the older format
    assert (lines[0]["id"], lines[0]["hash"]) == (
        heads[PRODUCTION].pk,
        heads[PRODUCTION].hash,
    )
    assert len({line["checkpointed_at"] for line in lines}) == 1
    assert run("verify", "--against", str(path)).endswith("3 checkpoints matched")


def test_audit_verify_against__tail_of_one_chain_cut__that_chain_reported(
    interleaved, tmp_path, actor, production
):
    # Given: anchored, then staging's last event removed and more written
    path = tmp_path / "anchors.jsonl"
    audit_checkpoint_write(path=path)
    staging_head = of(interleaved, STAGING)[-1]
    with triggers_off():
        raw_delete(staging_head.pk)
    services.flag_state_kill(  # production keeps growing meanwhile
        actor=actor, flag=sequential_workflow(), environment=production
    )
    # When
    plain = run("verify")
    with pytest.raises(CommandError) as raised:
        run("verify", "--against", str(path))
    # Then
    message = str(raised.value)
    assert plain.startswith("OK:")  # a cut tail leaves no trace in the chain
    assert message.startswith(f"BROKEN: event {staging_head.pk}: missing")
    assert "removed from the end" in message
    assert f"(chain {STAGING})" in message


def test_audit_verify_against__whole_chain_removed__reported(interleaved, tmp_path):
    # Given
    path = tmp_path / "anchors.jsonl"
    audit_checkpoint_write(path=path)
    with triggers_off():
        for event in of(interleaved, STAGING):
            raw_delete(event.pk)
    # When
    with pytest.raises(CommandError) as raised:
        run("verify", "--against", str(path))
    # Then
    message = str(raised.value)
    assert "the chain is empty" in message
    assert f"(chain {STAGING})" in message


def test_audit_checkpoint__one_chain_cut_since_last__refused(interleaved, tmp_path):
    # Given
    path = tmp_path / "anchors.jsonl"
    audit_checkpoint_write(path=path)
    before = path.read_bytes()
    victim = of(interleaved, PRODUCTION)[-1]
    with triggers_off():
        raw_delete(victim.pk)
    # When
    with pytest.raises(CommandError) as raised:
        run("checkpoint", "--file", str(path))
    # Then
    message = str(raised.value)
    assert message.startswith(f"BROKEN: event {victim.pk}, anchored by")
    assert f"chain {PRODUCTION}" in message
    assert path.read_bytes() == before


def sequential_workflow():
    from flags.models import Flag

    return Flag.objects.get(key="sequential_workflow")


def _make_legacy(events: list[AuditEvent]) -> None:
    """Rewrite ``events`` as events written before chains existed: no chain
    position, the older canonical text, one chain over them in id order."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    prev_hash = GENESIS_HASH
    with triggers_off(), connection.cursor() as cursor:
        for event in events:
            event.chain, event.chain_seq, event.prev_hash = (
                GLOBAL_CHAIN,
                None,
                prev_hash,
            )
            event.canonical = canonical_text(event)
            event.hash = chain_hash(prev_hash, event.canonical)
            cursor.execute(
                f"UPDATE {table} SET chain = %s, chain_seq = NULL, prev_hash = %s, "
                "hash = %s, canonical = %s WHERE id = %s",
                [GLOBAL_CHAIN, prev_hash, event.hash, event.canonical, event.pk],
            )
            prev_hash = event.hash


def test_audit_chain_verify__events_from_before_chains__open_global(
    environments, flag_factory, actor
):
    # Given: an existing database's events (one chain, no positions) ...
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=environments["production"], percentage=5
    )
    older = list(AuditEvent.objects.order_by("id"))
    _make_legacy(older)
    assert "chain" not in json.loads(older[-1].canonical)
    # ... then new events in global and in production
    services.merchant_create(actor=actor, key="m-new")
    services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=environments["production"], percentage=6
    )
    # When
    report = audit_chain_verify()
    # Then
    new_global = AuditEvent.objects.get(action="merchant.created")
    new_production = AuditEvent.objects.filter(chain=PRODUCTION).get()
    assert (report.ok, report.checked) == (True, len(older) + 2)
    assert (new_global.chain_seq, new_global.prev_hash) == (1, older[-1].hash)
    assert (new_production.chain_seq, new_production.prev_hash) == (1, GENESIS_HASH)


def test_audit_chain_verify__old_event_after_new_ones__detected(environments, actor):
    # Given: a positionless event claimed after positioned ones in global
    services.merchant_create(actor=actor, key="m-1")
    services.merchant_create(actor=actor, key="m-2")
    last = AuditEvent.objects.order_by("-id").first()
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET chain_seq = NULL WHERE id = %s", [last.pk])
    # When
    report = audit_chain_verify()
    # Then
    assert (report.ok, report.broken_id) == (False, last.pk)
    assert "no chain position" in report.problem
