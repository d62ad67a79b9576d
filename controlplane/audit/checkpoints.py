"""Checkpoints: the head of each audit chain, anchored outside the database.

The hash chain proves that nothing *before* an event changed; on its own it
cannot notice events cut from the end, or a whole chain rewritten with
recomputed hashes. A checkpoint records the head (id, hash, time) of every
chain where the database cannot reach it: one line per chain appended to a
JSON-lines file (opened ``O_APPEND``, fsynced) and an INFO line per chain on
the ``controlplane.audit.checkpoint`` logger, for log shipping.
``audit_chain_verify(anchors=...)`` then proves each chain still holds every
anchored (id, hash), and that nothing before it changed.

A line names its chain (``"chain": "env:production"``), except for the
``global`` chain: its lines look as every line did before there were
several chains, and a line without a chain anchors ``global``.

Point ``AUDIT_CHECKPOINT_PATH`` at storage the database's users cannot
rewrite (another host, an append-only mount, ``chattr +a``): an anchor the
attacker can edit anchors nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from controlplane.audit.chains import GLOBAL_CHAIN
from controlplane.audit.hashing import canonical_time
from controlplane.audit.models import AuditEvent
from controlplane.conf import setting
from controlplane.exceptions import AuditChainBroken, InvalidInput

logger = logging.getLogger("controlplane.audit.checkpoint")

CHECKPOINT_KIND = "audit.checkpoint"
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# Enough of the file's end to hold the last checkpoint of many chains.
_TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class Checkpoint:
    """One anchored head: event ``id`` of ``chain`` had ``hash`` then."""

    id: int
    hash: str
    created_at: str
    checkpointed_at: str
    chain: str = GLOBAL_CHAIN

    def as_line(self) -> str:
        """Return the checkpoint as one JSON line (with its newline)."""
        body = {"kind": CHECKPOINT_KIND, **asdict(self)}
        if self.chain == GLOBAL_CHAIN:
            del body["chain"]  # the line format from before there were chains
        return json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"


def checkpoint_path() -> Path:
    """Return the checkpoint file: the setting, else ``<VAR_DIR>/...jsonl``."""
    configured = setting("AUDIT_CHECKPOINT_PATH")
    if configured:
        return Path(configured)
    return Path(settings.VAR_DIR) / "audit-checkpoints.jsonl"


def _append_durably(path: Path, line: str) -> None:
    """Append ``line`` with one write to an O_APPEND file and fsync it.

    O_APPEND makes the write land at the end even with concurrent writers
    (one small write is not interleaved), and never overwrites earlier
    lines; fsync makes the anchor survive a crash right after it. A newly
    created file also gets its directory entry fsynced.
    """
    created = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        data = line.encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path} ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _last_checkpoints(path: Path) -> list[Checkpoint]:
    """Return the last checkpoint of each chain in the end of ``path``.

    Read only the end of the file: it grows by one line per chain and
    checkpoint. A line that is not a checkpoint is logged and skipped here
    (``audit verify --against`` refuses it); so is the first line of the
    end read, which may be cut.
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            handle.seek(start)
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    lines = tail.splitlines()
    if start > 0:
        lines = lines[1:]
    last: dict[str, Checkpoint] = {}
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            checkpoint = _parse_line(line, where=f"{path} near its end")
        except InvalidInput as exc:
            if number == len(lines) - 1:
                logger.error("audit checkpoint: %s; not compared with the chain", exc)
            continue
        last[checkpoint.chain] = checkpoint
    return list(last.values())


def _check_still_anchored(target: Path) -> None:
    """Raise AuditChainBroken when a chain lost its last anchored event.

    A checkpoint taken after a cut or a rewrite would anchor the damage; a
    cheap look-up of each chain's previous anchor refuses that. (The full
    proof is ``audit verify --against``.) An unreadable last line is logged,
    not fatal: the new anchors are still worth having.
    """
    previous = _last_checkpoints(target)
    if not previous:
        return
    current = dict(
        AuditEvent.objects.filter(pk__in=[anchor.id for anchor in previous])
        .values_list("pk", "hash")
        .iterator()
    )
    for anchor in sorted(previous, key=lambda anchor: anchor.id):
        if current.get(anchor.id) == anchor.hash:
            continue
        state = "missing" if anchor.id not in current else "changed"
        message = (
            f"event {anchor.id}, anchored by the last checkpoint of chain "
            f"{anchor.chain} ({anchor.checkpointed_at}), is {state}: the chain "
            f"was cut or rewritten since; nothing anchored (run 'manage.py "
            f"audit verify --against {target}')"
        )
        logger.error("audit checkpoint refused: %s", message)
        raise AuditChainBroken(message)


def chain_heads() -> list[dict]:
    """Return ``{chain, id, hash, created_at}`` of the last event of each chain."""
    chains = sorted(
        set(
            AuditEvent.objects.filter(chain_seq__isnull=False)
            .values_list("chain", flat=True)
            .distinct()
        )
    )
    heads = []
    for chain in chains:
        head = (
            AuditEvent.objects.filter(chain=chain, chain_seq__isnull=False)
            .order_by("-chain_seq")
            .values("chain", "id", "hash", "created_at")
            .first()
        )
        if head is not None:
            heads.append(head)
    if GLOBAL_CHAIN not in chains:
        # only events older than the chains, if any
        older = (
            AuditEvent.objects.filter(chain_seq__isnull=True)
            .order_by("-id")
            .values("chain", "id", "hash", "created_at")
            .first()
        )
        if older is not None:
            heads.insert(0, older)
    return sorted(heads, key=lambda head: head["chain"])


def audit_checkpoint_write(*, path: Path | None = None) -> list[Checkpoint]:
    """Anchor the head of every chain in the checkpoint file and the log.

    Return the checkpoints, one per chain (none when there is no event yet:
    there is nothing to anchor). Raise AuditChainBroken, writing nothing,
    when an event the file's last checkpoints anchored is gone or changed,
    and OSError when the file cannot be appended to. The lines of one
    checkpoint go out in one write.
    """
    target = path or checkpoint_path()
    heads = chain_heads()
    _check_still_anchored(target)
    if not heads:
        logger.info("audit checkpoint skipped: the chain has no event yet")
        return []
    now = canonical_time(timezone.now())
    checkpoints = [
        Checkpoint(
            id=head["id"],
            hash=head["hash"],
            created_at=canonical_time(head["created_at"]),
            checkpointed_at=now,
            chain=head["chain"],
        )
        for head in heads
    ]
    _append_durably(target, "".join(c.as_line() for c in checkpoints))
    for checkpoint in checkpoints:
        logger.info(
            "audit checkpoint chain=%s id=%s hash=%s created_at=%s "
            "checkpointed_at=%s file=%s",
            checkpoint.chain,
            checkpoint.id,
            checkpoint.hash,
            checkpoint.created_at,
            checkpoint.checkpointed_at,
            target,
        )
    return checkpoints


def _parse_line(text: str, *, where: str) -> Checkpoint:
    try:
        body = json.loads(text)
    except ValueError:
        raise InvalidInput(f"{where} is not JSON", field="against") from None
    if not isinstance(body, dict) or body.get("kind") != CHECKPOINT_KIND:
        raise InvalidInput(
            f"{where} is not an audit checkpoint (no kind {CHECKPOINT_KIND!r})",
            field="against",
        )
    event_id, event_hash = body.get("id"), body.get("hash")
    if isinstance(event_id, bool) or not isinstance(event_id, int) or event_id < 1:
        raise InvalidInput(f"{where}: id must be a positive integer", field="against")
    if not isinstance(event_hash, str) or not _HASH_RE.match(event_hash):
        raise InvalidInput(
            f"{where}: hash must be 64 lowercase hex digits", field="against"
        )
    chain = body.get("chain", GLOBAL_CHAIN)
    if not isinstance(chain, str) or not chain:
        raise InvalidInput(
            f"{where}: chain must be a non-empty string", field="against"
        )
    return Checkpoint(
        id=event_id,
        hash=event_hash,
        created_at=str(body.get("created_at", "")),
        checkpointed_at=str(body.get("checkpointed_at", "")),
        chain=chain,
    )


def audit_checkpoints_read(
    path: Path | str, *, latest_only: bool = False
) -> list[Checkpoint]:
    """Return the checkpoints in ``path``, oldest first.

    With ``latest_only``, return only the last checkpoint of each chain.

    Raise InvalidInput naming the file and line when the file cannot be read,
    holds no checkpoint, or a line is not a checkpoint: a damaged anchor file
    must be noticed, not skipped.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InvalidInput(
            f"cannot read checkpoint file {str(path)!r}: {reason}", field="against"
        ) from None
    checkpoints = [
        _parse_line(line, where=f"{path} line {number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not checkpoints:
        raise InvalidInput(
            f"checkpoint file {str(path)!r} holds no checkpoint", field="against"
        )
    if latest_only:
        last = {checkpoint.chain: checkpoint for checkpoint in checkpoints}
        return sorted(last.values(), key=lambda checkpoint: checkpoint.id)
    return checkpoints


__all__ = [
    "Checkpoint",
    "audit_checkpoint_write",
    "chain_heads",
    "audit_checkpoints_read",
    "checkpoint_path",
]
