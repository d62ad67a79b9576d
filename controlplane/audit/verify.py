"""Verify the audit chains: one pass over every event, every chain at once.

Within a chain, events are appended under the chain's lock, so their ids
grow with their positions; one walk in id order therefore checks each
chain in its own order, keeping per chain the hash and the position the
next event must link to. A break stops the check of that chain only: the
others go on, so one report names every broken chain and where.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from controlplane.audit.chains import GLOBAL_CHAIN
from controlplane.audit.hashing import GENESIS_HASH, event_intact
from controlplane.audit.models import AuditEvent

if TYPE_CHECKING:
    from controlplane.audit.checkpoints import Checkpoint


@dataclass(frozen=True)
class ChainReport:
    """The result of a verification.

    For one chain: ``checked`` events of it verified before ``broken_id``
    (or all of them). For every chain together (``audit_chain_verify``):
    ``checked`` counts every event before the first broken one in id order,
    ``chain`` names the chain that broke first, and ``chains`` holds the
    report of each chain, sorted by name.
    """

    ok: bool
    checked: int
    broken_id: int | None = None
    problem: str = ""
    anchors_matched: int = 0
    chain: str = ""
    head_id: int | None = None
    chains: tuple[ChainReport, ...] = ()


@dataclass
class _Walk:
    """The state of one chain during the walk."""

    chain: str
    expected_prev: str = GENESIS_HASH
    expected_seq: int = 1
    positioned: bool = False
    checked: int = 0
    last_id: int | None = None
    broken_id: int | None = None
    problem: str = ""
    anchors_matched: int = 0
    seen_anchors: set[int] = field(default_factory=set)

    def break_at(self, event_id: int, problem: str) -> None:
        self.broken_id, self.problem = event_id, problem


def _position_problem(walk: _Walk, event: AuditEvent) -> str:
    """Return why ``event`` cannot be the next of its chain, or ""."""
    seq = event.chain_seq
    if seq is None:
        if walk.chain != GLOBAL_CHAIN:
            return "has no chain position, which only events older than the chains have"
        if walk.positioned:
            return (
                "has no chain position but comes after positioned events "
                "(inserted or moved)"
            )
        return ""
    if seq > walk.expected_seq:
        gone = seq - walk.expected_seq
        return (
            f"is at position {seq} where {walk.expected_seq} comes next: "
            f"{gone} event{'s' if gone > 1 else ''} before it were removed"
        )
    if seq < walk.expected_seq:
        return (
            f"is at position {seq}, after position {walk.expected_seq - 1}: "
            "events were reordered or duplicated"
        )
    return ""


def _check(walk: _Walk, event: AuditEvent, anchors: list[Checkpoint]) -> str:
    """Return the problem that breaks ``walk`` at ``event``, or ""."""
    if event.prev_hash != walk.expected_prev:
        where = _position_problem(walk, event)
        return where or (
            "prev_hash does not match the event before it "
            "(an event was removed or reordered)"
        )
    where = _position_problem(walk, event)
    if where:
        return where
    if not event_intact(event):
        return "content does not match its hash (edited)"
    for anchor in anchors:
        if anchor.chain != walk.chain:
            return (
                f"is in chain {walk.chain}, though the checkpoint of "
                f"{anchor.checkpointed_at} anchored it in chain {anchor.chain}"
            )
        if anchor.hash != event.hash:
            return (
                f"hash differs from the checkpoint of {anchor.checkpointed_at} "
                "(the chain was rewritten up to here)"
            )
    return ""


def _missing_anchor(walk: _Walk, anchors: Sequence[Checkpoint]) -> None:
    """Break ``walk`` at the first of its anchors that was never seen."""
    missing = sorted(
        (
            anchor
            for anchor in anchors
            if anchor.chain == walk.chain and anchor.id not in walk.seen_anchors
        ),
        key=lambda anchor: anchor.id,
    )
    if not missing:
        return
    anchor = missing[0]
    if walk.last_id is None or anchor.id > walk.last_id:
        ends = (
            f"the chain ends at event {walk.last_id}"
            if walk.last_id
            else "the chain is empty"
        )
        problem = (
            f"missing, though the checkpoint of {anchor.checkpointed_at} anchored "
            f"it ({ends}): events were removed from the end"
        )
    else:
        problem = (
            f"missing, though the checkpoint of {anchor.checkpointed_at} anchored "
            "it: events were removed and the chain relinked"
        )
    walk.break_at(anchor.id, problem)


def _report(walk: _Walk) -> ChainReport:
    return ChainReport(
        ok=walk.broken_id is None,
        checked=walk.checked,
        broken_id=walk.broken_id,
        problem=walk.problem,
        anchors_matched=walk.anchors_matched,
        chain=walk.chain,
        head_id=walk.last_id,
    )


def audit_chains_verify(
    *, chunk_size: int = 2000, anchors: Sequence[Checkpoint] = ()
) -> list[ChainReport]:
    """Verify every chain; return one report per chain, sorted by chain.

    An event with ``canonical`` is checked by hashing that stored text (so a
    JSON column that does not round-trip a number cannot break the chain)
    and by comparing its columns with it, numbers by exact value (so an edit
    of a column is still found). An event written before ``canonical``
    existed is checked the old way, by hashing its columns. Each event must
    link to the one before it in its chain (``prev_hash``) and sit at the
    next position; events older than the chains (no position) open the
    ``global`` chain.

    ``anchors`` (checkpoints, see ``controlplane.audit.checkpoints``) must
    each be found in their chain with the same hash: a missing anchored event
    means events were cut (from the end, where the chain alone cannot tell),
    a different hash means the chain was rewritten with recomputed hashes.
    A chain that an anchor names but that has no event at all is reported
    too (the whole chain was removed).
    """
    return list(_walk_all(chunk_size=chunk_size, anchors=anchors)[0])


def _walk_all(
    *, chunk_size: int, anchors: Sequence[Checkpoint]
) -> tuple[list[ChainReport], int | None]:
    """Walk every event; return the reports and the count before the first break."""
    by_id: dict[int, list[Checkpoint]] = {}
    for anchor in anchors:
        by_id.setdefault(anchor.id, []).append(anchor)
    walks: dict[str, _Walk] = {}
    walked = 0
    before_first_break: int | None = None
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=chunk_size):
        walk = walks.get(event.chain)
        if walk is None:
            walk = walks[event.chain] = _Walk(event.chain)
        if walk.broken_id is not None:
            continue  # past its break a chain proves nothing
        problem = _check(walk, event, by_id.get(event.pk, []))
        if problem:
            walk.break_at(event.pk, problem)
            if before_first_break is None:
                before_first_break = walked
            continue
        if event.pk in by_id:
            walk.seen_anchors.add(event.pk)
            walk.anchors_matched += len(by_id[event.pk])
        walk.expected_prev = event.hash
        if event.chain_seq is not None:
            walk.positioned = True
            walk.expected_seq = event.chain_seq + 1
        walk.last_id = event.pk
        walk.checked += 1
        walked += 1
    for anchor in anchors:
        walks.setdefault(anchor.chain, _Walk(anchor.chain))
    for walk in walks.values():
        if walk.broken_id is None:
            _missing_anchor(walk, anchors)
    reports = [_report(walks[name]) for name in sorted(walks)]
    return reports, before_first_break


def audit_chain_verify(
    *,
    chunk_size: int = 2000,
    anchors: Sequence[Checkpoint] = (),
    chain: str | None = None,
) -> ChainReport:
    """Verify every chain (or only ``chain``); report the first broken event.

    The report is ok when every chain is. When one is not, it names the
    broken event with the lowest id, its chain (also in ``problem``), and
    how many events before it (in id order, every chain) verified; the
    report of each chain is in ``chains``. See ``audit_chains_verify`` for
    what is checked.
    """
    reports, before_first_break = _walk_all(chunk_size=chunk_size, anchors=anchors)
    if chain is not None:
        for report in reports:
            if report.chain == chain:
                return report
        return ChainReport(True, 0, chain=chain)
    matched = sum(report.anchors_matched for report in reports)
    total = sum(report.checked for report in reports)
    broken = [report for report in reports if not report.ok]
    if not broken:
        return ChainReport(True, total, anchors_matched=matched, chains=tuple(reports))
    first = min(broken, key=lambda report: report.broken_id or 0)
    checked = total if before_first_break is None else before_first_break
    if before_first_break is None or first.problem.startswith("missing"):
        # only anchors are missing: every event that exists verified
        checked = total
    return replace(
        first,
        checked=checked,
        problem=f"{first.problem} (chain {first.chain})",
        anchors_matched=matched,
        chains=tuple(reports),
    )


__all__ = ["ChainReport", "audit_chain_verify", "audit_chains_verify"]
