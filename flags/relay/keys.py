"""Client keys on a relay: verified upstream once, then answered from memory.

A relay has no key table. The first request with a raw key makes one
conditional GET of the relay environment's ruleset upstream with that key:
200 or 304 means a server key of this environment; 401 an unknown or
revoked key; 403 a key of another environment or scope. The answer is
cached in memory by the key's SHA-256 (never the key itself); a valid key
is also kept, hashed, in ``<data-dir>/keys.json`` so a relay restarted
during an outage still accepts it.

- A valid key is verified again upstream after
  ``RELAY_KEY_RECHECK_SECONDS``, in the background: the request that notices
  is answered at once, and a revocation reaches the relay within that time.
- A refused key is remembered for ``APIKEY_NEGATIVE_TTL`` seconds, in memory.
- A key that cannot be verified (upstream unreachable, not on disk) gets
  ``ApiKeysUnavailable`` (503 with Retry-After), never a 401 that would tell
  a valid caller its key is wrong.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from controlplane.apikeys.cache import ApiKeyInfo, ApiKeysUnavailable
from controlplane.conf import setting
from flags.relay import disk

log = logging.getLogger(__name__)

KEYS_FILE = "keys.json"
_MAX_ENTRIES = 10_000


def digest(raw: str) -> str:
    """Return the SHA-256 of a raw key (what is cached and kept on disk)."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _info(environment_key: str, raw_digest: str, scope: str = "server") -> ApiKeyInfo:
    return ApiKeyInfo(
        pk=0,
        name=f"relay-verified:{raw_digest[:8]}",
        scope=scope,
        environment_id=None,
        environment_key=environment_key,
        user_id=None,
        prefix=raw_digest[:8],
    )


class KeyVerifier:
    """``resolve(raw) -> ApiKeyInfo | None`` for the hot path of a relay."""

    def __init__(
        self,
        base_url: str,
        data_dir: Path,
        environment: Callable[[], str | None],
        *,
        timeout: float = 5.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.path = Path(data_dir) / KEYS_FILE
        self.environment = environment  # () -> the relay's environment key
        self.timeout = timeout
        self._lock = threading.Lock()
        # digest -> (valid, verified_at monotonic)
        self._entries: dict[str, tuple[bool, float]] = {}
        self._rechecking: set[str] = set()
        self.verifications = 0
        stored = disk.read_record(self.path)
        # keys kept on disk count as verified long ago: re-checked at first use
        self._persisted: set[str] = set(stored) if isinstance(stored, list) else set()
        for raw_digest in self._persisted:
            self._entries[raw_digest] = (True, float("-inf"))

    def is_known(self, raw: str) -> bool:
        """Return True when ``resolve`` answers from memory (no upstream call)."""
        entry = self._entries.get(digest(raw))
        if entry is None:
            return False
        valid, verified_at = entry
        return valid or time.monotonic() - verified_at < setting("APIKEY_NEGATIVE_TTL")

    def resolve(self, raw: str) -> ApiKeyInfo | None:
        """Return the key's info, None when refused; raise when unverifiable."""
        environment_key = self.environment()
        if environment_key is None:
            raise ApiKeysUnavailable("the relay has not reached its upstream yet")
        raw_digest = digest(raw)
        entry = self._entries.get(raw_digest)
        now = time.monotonic()
        if entry is not None:
            valid, verified_at = entry
            if valid:
                if now - verified_at > setting("RELAY_KEY_RECHECK_SECONDS"):
                    self._recheck_later(raw, raw_digest)
                return _info(environment_key, raw_digest)
            if now - verified_at < setting("APIKEY_NEGATIVE_TTL"):
                return None
        answer = self._verify(raw, raw_digest, environment_key)
        if answer is None:
            raise ApiKeysUnavailable("the key cannot be verified: upstream unavailable")
        if answer == "other":
            # a key of another environment or a management key: the hot path
            # answers 403 for a key that is not a server key of this one
            return _info(environment_key, raw_digest, scope="other")
        return _info(environment_key, raw_digest) if answer == "valid" else None

    def _verify(self, raw: str, raw_digest: str, environment_key: str) -> str | None:
        """Ask upstream; return "valid", "refused", "other", or None."""
        request = urllib.request.Request(
            f"{self.base_url}/api/v1/environments/{environment_key}/ruleset",
            headers={"Authorization": f"Bearer {raw}"},
            method="GET",
        )
        self.verifications += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read()
                status = 200
        except urllib.error.HTTPError as exc:
            status = exc.code
        except Exception as exc:
            log.info("relay: key not verifiable upstream: %s", exc)
            return None
        if status in (200, 304):
            self._remember(raw_digest, True)
            return "valid"
        if status in (401, 403):
            self._remember(raw_digest, False)
            return "refused" if status == 401 else "other"
        return None

    def _remember(self, raw_digest: str, valid: bool) -> None:
        with self._lock:
            if len(self._entries) >= _MAX_ENTRIES and raw_digest not in self._entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[raw_digest] = (valid, time.monotonic())
            changed = (raw_digest in self._persisted) != valid
            if changed:
                if valid:
                    self._persisted.add(raw_digest)
                else:
                    self._persisted.discard(raw_digest)
                snapshot = sorted(self._persisted)
        if changed:
            try:
                disk.write_record(self.path, snapshot)
            except OSError as exc:
                log.warning("relay: cannot write the verified keys: %s", exc)

    def _recheck_later(self, raw: str, raw_digest: str) -> None:
        with self._lock:
            if raw_digest in self._rechecking:
                return
            self._rechecking.add(raw_digest)

        def recheck() -> None:
            try:
                environment_key = self.environment()
                if environment_key is not None:
                    self._verify(raw, raw_digest, environment_key)
            finally:
                with self._lock:
                    self._rechecking.discard(raw_digest)

        threading.Thread(target=recheck, name="relay-key-recheck", daemon=True).start()
