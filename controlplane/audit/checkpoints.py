"""Checkpoints: the head of the audit chain, anchored outside the database.

The hash chain proves that nothing *before* an event changed; on its own it
cannot notice events cut from the end, or a whole chain rewritten with
recomputed hashes. A checkpoint records the head (id, hash, time) where the
database cannot reach it: a line appended to a JSON-lines file (opened
``O_APPEND``, fsynced) and an INFO line on the ``controlplane.audit.checkpoint``
logger, for log shipping. ``audit_chain_verify(anchors=...)`` then proves the
chain still holds every anchored (id, hash), and that nothing before it
changed.

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

from controlplane.audit.models import AuditEvent
from controlplane.audit.services import _canonical_time
from controlplane.conf import setting
from controlplane.exceptions import AuditChainBroken, InvalidInput

logger = logging.getLogger("controlplane.audit.checkpoint")

CHECKPOINT_KIND = "audit.checkpoint"
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
# Enough of the file's end to hold its last line many times over.
_TAIL_BYTES = 64 * 1024


@dataclass(frozen=True)
class Checkpoint:
    """One anchored head: event ``id`` had ``hash`` at ``checkpointed_at``."""

    id: int
    hash: str
    created_at: str
    checkpointed_at: str

    def as_line(self) -> str:
        """Return the checkpoint as one JSON line (with its newline)."""
        body = {"kind": CHECKPOINT_KIND, **asdict(self)}
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


def _last_checkpoint(path: Path) -> Checkpoint | None:
    """Return the last checkpoint in ``path``; None when there is none yet.

    Read only the end of the file: it grows by one line per checkpoint.
    Raise InvalidInput when the last line is not a checkpoint.
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return None
    lines = [line for line in tail.splitlines() if line.strip()]
    if not lines:
        return None
    return _parse_line(lines[-1], where=f"{path} last line")


def _check_still_anchored(target: Path) -> None:
    """Raise AuditChainBroken when the chain lost the last anchored event.

    A checkpoint taken after a cut or a rewrite would anchor the damage; a
    cheap look-up of the previous anchor refuses that. (The full proof is
    ``audit verify --against``.) An unreadable last line is logged, not
    fatal: the new anchor is still worth having.
    """
    try:
        previous = _last_checkpoint(target)
    except InvalidInput as exc:
        logger.error("audit checkpoint: %s; not compared with the chain", exc)
        return
    if previous is None:
        return
    found = AuditEvent.objects.filter(pk=previous.id).values_list("hash", flat=True)
    current = found.first()
    if current == previous.hash:
        return
    state = "missing" if current is None else "changed"
    message = (
        f"event {previous.id}, anchored by the last checkpoint "
        f"({previous.checkpointed_at}), is {state}: the chain was cut or "
        f"rewritten since; nothing anchored (run 'manage.py audit verify "
        f"--against {target}')"
    )
    logger.error("audit checkpoint refused: %s", message)
    raise AuditChainBroken(message)


def audit_checkpoint_write(*, path: Path | None = None) -> Checkpoint | None:
    """Anchor the chain's current head in the checkpoint file and the log.

    Return the checkpoint, or None when the chain has no event yet (there is
    nothing to anchor). Raise AuditChainBroken, writing nothing, when the
    event the file's last checkpoint anchored is gone or changed, and
    OSError when the file cannot be appended to.
    """
    target = path or checkpoint_path()
    head = AuditEvent.objects.order_by("-id").values("id", "hash", "created_at").first()
    _check_still_anchored(target)
    if head is None:
        logger.info("audit checkpoint skipped: the chain has no event yet")
        return None
    checkpoint = Checkpoint(
        id=head["id"],
        hash=head["hash"],
        created_at=_canonical_time(head["created_at"]),
        checkpointed_at=_canonical_time(timezone.now()),
    )
    _append_durably(target, checkpoint.as_line())
    logger.info(
        "audit checkpoint id=%s hash=%s created_at=%s checkpointed_at=%s file=%s",
        checkpoint.id,
        checkpoint.hash,
        checkpoint.created_at,
        checkpoint.checkpointed_at,
        target,
    )
    return checkpoint


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
    return Checkpoint(
        id=event_id,
        hash=event_hash,
        created_at=str(body.get("created_at", "")),
        checkpointed_at=str(body.get("checkpointed_at", "")),
    )


def audit_checkpoints_read(
    path: Path | str, *, latest_only: bool = False
) -> list[Checkpoint]:
    """Return the checkpoints in ``path``, oldest first (or only the last).

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
    return checkpoints[-1:] if latest_only else checkpoints


__all__ = [
    "Checkpoint",
    "audit_checkpoint_write",
    "audit_checkpoints_read",
    "checkpoint_path",
]
