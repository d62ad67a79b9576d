"""Audit chains and their locks: one chain per environment, one for the rest.

An event with an environment joins that environment's chain
(``env:<key>``); any other event joins ``global`` (the registry: merchants,
segments, flag definitions, environments, API keys, users). Each chain is a
hash chain of its own, so writers in different environments append without
waiting for each other.

Locks (PostgreSQL, transaction-scoped advisory locks, released at commit):

- a writer that knows its chains takes the *all-chains* key in shared mode,
  then each chain's own key, in sorted order, before any row lock;
- a writer that does not (``audited_transaction()`` without chains, as most
  services of the canary and rollback apps) takes the all-chains key in
  exclusive mode: it waits for every other audited writer and may then
  append to any chain, exactly as the single global lock did before.

So every audited transaction locks in one order (all-chains key, chains
sorted, then rows) and two of them cannot deadlock over the chains. SQLite
starts write transactions IMMEDIATE (settings), so writers are serialized
there already and nothing is taken.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import connection, transaction

GLOBAL_CHAIN = "global"
_ENVIRONMENT_PREFIX = "env:"
# The key the single chain lock used: an exclusive holder still excludes
# every audited writer, old or new.
ALL_CHAINS_LOCK_KEY = 7_412_990_001
# Per-chain keys use the two-int4 form of advisory locks: another key space.
_CHAIN_LOCK_CLASS = 741_299


def environment_chain(environment_key: str) -> str:
    """Return the chain of events about environment ``environment_key``."""
    return f"{_ENVIRONMENT_PREFIX}{environment_key}"


def chain_for(*, environment: str) -> str:
    """Return the chain an event joins: its environment's, else ``global``."""
    return environment_chain(environment) if environment else GLOBAL_CHAIN


def chain_lock_key(chain: str) -> int:
    """Return the int4 advisory-lock key of ``chain``.

    Two chains sharing a key only serialize each other; nothing breaks.
    """
    value = zlib.crc32(chain.encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


@dataclass(frozen=True, slots=True)
class _Held:
    exclusive: bool
    chains: frozenset[str]

    def covers(self, chain: str) -> bool:
        return self.exclusive or chain in self.chains


_EXCLUSIVE = _Held(exclusive=True, chains=frozenset())


def _stack() -> list[_Held]:
    """Return what the open ``audited_transaction`` blocks hold, innermost last.

    Only open blocks count: what they locked is held until their transaction
    ends (a savepoint rolled back releases only the locks taken inside it,
    and it closes the blocks opened inside it too).
    """
    stack = getattr(connection, "_audit_chain_locks", None)
    if stack is None:
        stack = connection._audit_chain_locks = []
    return stack


def _held() -> _Held | None:
    stack = _stack()
    return stack[-1] if stack else None


def _acquire(held: _Held | None, chains: Iterable[str] | None) -> _Held:
    """Take what is not held yet of ``chains`` (None: all); return what is held."""
    if held is not None and held.exclusive:
        return held
    with connection.cursor() as cursor:
        if chains is None:
            # Waits for every audited writer; one already holding the shared
            # key in this transaction (an odd nesting) can deadlock here, and
            # PostgreSQL then aborts one of the two.
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ALL_CHAINS_LOCK_KEY])
            return _EXCLUSIVE
        wanted = frozenset(chains)
        have = held.chains if held is not None else frozenset()
        missing = sorted(wanted - have)
        for index, chain in enumerate(missing):
            key = chain_lock_key(chain)
            if index == 0 and held is None:
                cursor.execute(
                    "SELECT pg_advisory_xact_lock_shared(%s), "
                    "pg_advisory_xact_lock(%s, %s)",
                    [ALL_CHAINS_LOCK_KEY, _CHAIN_LOCK_CLASS, key],
                )
            else:
                # one statement per chain: the sorted order is the lock order
                cursor.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", [_CHAIN_LOCK_CLASS, key]
                )
        return _Held(exclusive=False, chains=have | wanted)


def audit_chain_lock(chains: Iterable[str] | None = None) -> None:
    """Lock ``chains`` (None: every chain) for appends, in this transaction.

    Call it before any row lock (``audited_transaction`` does). Taking a lock
    this transaction's open audited block already holds costs nothing.
    """
    if connection.vendor != "postgresql":
        return
    _acquire(_held(), chains)


def ensure_chain_locked(chain: str) -> None:
    """Make sure ``chain`` is locked before an event is appended to it.

    Inside an ``audited_transaction`` that covers it, this runs no query.
    Otherwise it is locked now: a caller that already holds row locks then
    breaks the lock order, which is why services lock through
    ``audited_transaction`` first.
    """
    if connection.vendor != "postgresql":
        return
    held = _held()
    if held is not None and held.covers(chain):
        return
    _acquire(held, [chain])


@contextmanager
def audited_transaction(*, chains: Iterable[str] | None = None) -> Iterator[None]:
    """Open ``transaction.atomic()`` and take the audit-chain locks first.

    ``chains`` names every chain the block will append to (for a flag state
    in production: ``[environment_chain("production")]``); without it, the
    block may append to any chain and waits for every other audited writer.
    Taking the locks before any row lock gives all audited writes one lock
    order (chains, then rows), so two services can never deadlock by
    locking a row and a chain in opposite orders. Services use this instead
    of a bare atomic block.
    """
    wanted = None if chains is None else frozenset(chains)
    with transaction.atomic():
        if connection.vendor != "postgresql":
            yield
            return
        stack = _stack()
        stack.append(_acquire(stack[-1] if stack else None, wanted))
        depth = len(stack)
        try:
            yield
        finally:
            del stack[depth - 1 :]


__all__ = [
    "ALL_CHAINS_LOCK_KEY",
    "GLOBAL_CHAIN",
    "audit_chain_lock",
    "audited_transaction",
    "chain_for",
    "chain_lock_key",
    "ensure_chain_locked",
    "environment_chain",
]
