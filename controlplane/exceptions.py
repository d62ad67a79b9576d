"""Domain errors. Interfaces map them to HTTP codes / exit codes in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises for a caller's mistake."""

    code = "invalid"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        body: dict = {"code": self.code, "message": self.message}
        if self.field:
            body["errors"] = {self.field: [self.message]}
        return body


class InvalidInput(DomainError):
    """Input that fails validation; ``field`` names the offending field."""


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Forbidden(DomainError):
    """A choice the caller may not make (e.g. a backend not bound to a service)."""

    code = "forbidden"
    http_status = 403


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class VersionConflict(Conflict):
    """An edit based on a version that is no longer current; nothing merged."""

    code = "version_conflict"

    def __init__(self, *, what: str, expected: int, current: int) -> None:
        super().__init__(
            f"{what} is at version {current}, not {expected}: reload and retry"
            " (nothing was changed)",
            field="version",
        )
        self.expected = expected
        self.current = current

    def as_dict(self) -> dict:
        body = super().as_dict()
        body["current_version"] = self.current
        return body


class InvalidTransition(Conflict):
    code = "invalid_transition"


class AuditChainBroken(Conflict):
    """The audit chain no longer holds an event a checkpoint anchored."""

    code = "audit_chain_broken"


class DatabaseUnavailable(DomainError):
    """The database cannot be reached and nothing cached can answer (503)."""

    code = "database_unavailable"
    http_status = 503
