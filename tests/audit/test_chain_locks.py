"""Chain locks on PostgreSQL: writers of different chains run side by side.

Threads play concurrent writers; each has its own database connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit.actors import Actor
from controlplane.audit.chains import (
    GLOBAL_CHAIN,
    audited_transaction,
    environment_chain,
)
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chains_verify, record_audit_event
from flags import services

WAIT = 10.0  # seconds a thread may take before the test gives up on it


class Writer(threading.Thread):
    """Run ``body`` on its own connection; remember when it finished."""

    def __init__(self, body: Callable[[], None]) -> None:
        super().__init__(daemon=True)
        self.body = body
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.body()
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.done.set()
            connection.close()


def hold(chains: list[str] | None, entered: threading.Event, release: threading.Event):
    """Return a body that opens an audited block and waits inside it."""

    def body() -> None:
        with audited_transaction(chains=chains):
            entered.set()
            release.wait(WAIT)

    return body


def append(chains: list[str] | None, chain: str):
    """Return a body that appends one event to ``chain``."""

    def body() -> None:
        with audited_transaction(chains=chains):
            record_audit_event(
                actor=Actor(type="user", id="t", name="t"),
                action="test.appended",
                target=("test", chain),
                chain=chain,
            )

    return body


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("holder", "other", "waits"),
    [
        ([environment_chain("a")], [environment_chain("b")], False),
        ([environment_chain("a")], [environment_chain("a")], True),
        ([environment_chain("a")], None, True),
        (None, [environment_chain("b")], True),
        ([environment_chain("a")], [GLOBAL_CHAIN], False),
    ],
    ids=["other-chain", "same-chain", "then-all", "all-then-chain", "then-global"],
)
def test_audited_transaction__held_chain__only_its_writers_wait(
    transactional_db, holder, other, waits
):
    # Given: a writer inside an audited block of ``holder``
    entered, release = threading.Event(), threading.Event()
    first = Writer(hold(holder, entered, release))
    first.start()
    assert entered.wait(WAIT)
    # When: another writer appends to a chain of ``other``
    chain = other[0] if other else environment_chain("a")
    second = Writer(append(other, chain))
    second.start()
    finished_meanwhile = second.done.wait(0.5 if waits else WAIT)
    release.set()
    # Then
    assert second.done.wait(WAIT) and first.done.wait(WAIT)
    assert (first.error, second.error) == (None, None)
    assert finished_meanwhile is not waits
    assert AuditEvent.objects.filter(chain=chain).count() == 1


@pytest.mark.postgres
def test_writers__many_threads_many_chains__every_chain_verifies(
    transactional_db, flag_factory, merchant_factory, actor
):
    # Given: four environments with a flag each, and one merchant
    environments = [
        services.environment_create(actor=actor, key=f"w{n}") for n in range(4)
    ]
    flags = [flag_factory(f"flag-{n}") for n in range(4)]
    merchant = merchant_factory("m-pilot")
    rounds = 12
    barrier = threading.Barrier(6)

    def changes(n: int) -> Callable[[], None]:
        def body() -> None:
            barrier.wait(WAIT)
            for step in range(rounds):
                services.flag_state_set_percentage(
                    actor=actor,
                    flag=flags[n],
                    environment=environments[n],
                    percentage=1 + step,
                )

        return body

    def overrides() -> None:  # the same chain as writer 0, other rows
        barrier.wait(WAIT)
        for step in range(rounds):
            services.override_set(
                actor=actor,
                flag=flags[1],
                environment=environments[0],
                merchant=merchant,
                variation="on" if step % 2 == 0 else "off",
            )

    def registry() -> None:  # waits for every chain each time
        barrier.wait(WAIT)
        for step in range(4):
            services.merchant_create(actor=actor, key=f"m-new-{step}")

    writers = [Writer(changes(n)) for n in range(4)]
    writers += [Writer(overrides), Writer(registry)]
    # When
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(3 * WAIT)
    # Then
    assert [writer.error for writer in writers] == [None] * len(writers)
    reports = {report.chain: report for report in audit_chains_verify()}
    assert all(report.ok for report in reports.values()), reports
    for n in range(4):
        expected = rounds * (2 if n == 0 else 1)
        assert reports[environment_chain(f"w{n}")].checked == expected
    for chain in reports:
        positions = list(
            AuditEvent.objects.filter(chain=chain)
            .order_by("id")
            .values_list("chain_seq", flat=True)
        )
        assert positions == list(range(1, len(positions) + 1)), chain


@pytest.mark.postgres
def test_record_audit_event__inside_block_of_its_chain__no_lock_query(
    production, flag_factory, actor
):
    # Given
    flag = flag_factory("sequential_workflow")
    # When
    with CaptureQueriesContext(connection) as queries:
        services.flag_state_set_percentage(
            actor=actor, flag=flag, environment=production, percentage=10
        )
    # Then: one lock statement, before any row is read
    sql = [query["sql"] for query in queries.captured_queries]
    locks = [n for n, text in enumerate(sql) if "pg_advisory" in text]
    first_row = next(n for n, text in enumerate(sql) if "flags_flagstate" in text)
    assert len(locks) == 1 and locks[0] < first_row
    assert "pg_advisory_xact_lock_shared" in sql[locks[0]]


@pytest.mark.postgres
def test_audited_transaction__nested_same_chain__locks_once(db, actor):
    # Given
    chain = environment_chain("production")
    # When
    with CaptureQueriesContext(connection) as queries:
        with audited_transaction(chains=[chain]):
            with audited_transaction(chains=[chain]):
                record_audit_event(
                    actor=actor, action="test.nested", target=("test", 1), chain=chain
                )
            record_audit_event(
                actor=actor, action="test.nested", target=("test", 2), chain=chain
            )
    # Then
    locks = [q for q in queries.captured_queries if "pg_advisory" in q["sql"]]
    assert len(locks) == 1


@pytest.mark.postgres
def test_audited_transaction__all_chains_then_one__no_further_lock(db, actor):
    # When
    with CaptureQueriesContext(connection) as queries:
        with audited_transaction():
            with audited_transaction(chains=[environment_chain("x")]):
                record_audit_event(
                    actor=actor,
                    action="test.nested",
                    target=("test", 1),
                    environment="x",
                )
    # Then
    locks = [q["sql"] for q in queries.captured_queries if "pg_advisory" in q["sql"]]
    assert len(locks) == 1 and "_shared" not in locks[0]
