"""Level 2: bring a service back to the previous deployment's version.

Backends come from ``setting("ROLLBACK_DEPLOY_BACKENDS")`` only (never the
admin or the API): ``command`` (argv template, no shell), ``webhook`` (signed
JSON POST) and ``symlink`` (``releases/<version>`` + an atomic ``current``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

from controlplane.conf import setting
from rollback.actuators.base import ActuatorError, StepContext
from rollback.actuators.processes import call_with_heartbeat, run_argv

__all__ = ["run_argv"]  # re-exported: the migration backup runs commands too

BACKEND_TYPES = ("command", "webhook", "symlink")


class BackendNotConfigured(Exception):
    """No backend (or an invalid one) for a service; the message says which."""


class BackendUnknown(BackendNotConfigured):
    """A caller named a backend that is not configured."""


class BackendNotAllowed(BackendNotConfigured):
    """A caller named a configured backend that may not revert the service."""


def _configured() -> dict[str, dict[str, Any]]:
    backends = setting("ROLLBACK_DEPLOY_BACKENDS") or {}
    return {str(name): dict(config) for name, config in backends.items()}


def backends_for_service(service: str) -> list[str]:
    """Return the names of the backends allowed to revert ``service``.

    A backend with a ``services`` list serves exactly those services. One
    without it serves the service it is named after; an unbound ``default``
    serves every service that no backend is bound to or named after.
    """
    backends = _configured()
    allowed = [
        name
        for name, config in backends.items()
        if isinstance(config.get("services"), (list, tuple))
        and service in config["services"]
    ]
    own = backends.get(service)
    if own is not None and own.get("services") is None and service not in allowed:
        allowed.append(service)
    default = backends.get("default")
    if not allowed and default is not None and default.get("services") is None:
        allowed.append("default")
    return allowed


def backend_resolve(
    *, service: str, name: str | None = None
) -> tuple[str, dict[str, Any]]:
    """Return (name, config) of the backend that reverts ``service``.

    An explicit ``name`` must be configured (else BackendUnknown) and allowed
    for the service (else BackendNotAllowed). Without one: the backend named
    like the service, else ``default``, else the service's only bound
    backend. Raise BackendNotConfigured with a readable line otherwise, or
    when the chosen backend's config is unusable.
    """
    backends = _configured()
    allowed = backends_for_service(service)
    may_use = ", ".join(allowed) or "none"
    if name:
        if name not in backends:
            raise BackendUnknown(
                f"deploy backend {name!r} is not configured"
                f" (service {service!r} may use: {may_use})"
            )
        if name not in allowed:
            raise BackendNotAllowed(
                f"deploy backend {name!r} may not revert service {service!r}"
                f" (service {service!r} may use: {may_use})"
            )
        chosen = name
    elif service in allowed:
        chosen = service
    elif "default" in allowed:
        chosen = "default"
    elif len(allowed) == 1:
        chosen = allowed[0]
    elif allowed:
        raise BackendNotConfigured(
            f"service {service!r} may use several deploy backends ({may_use}):"
            " name one (backend)"
        )
    else:
        raise BackendNotConfigured(
            f"no deploy backend for service {service!r}: add ROLLBACK_DEPLOY_BACKENDS"
            f"[{service!r}], a backend whose 'services' list it, or an unbound"
            " ['default'] to settings"
        )
    config = backends[chosen]
    problem = backend_problem(config)
    if problem:
        raise BackendNotConfigured(f"deploy backend {chosen!r}: {problem}")
    return chosen, config


def _is_argv(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(a, str) for a in value)
    )


def backend_problem(config: dict[str, Any]) -> str:
    """Return what is wrong with a backend config, or "" when it is usable.

    A command or webhook backend that cannot verify the running version
    (no ``verify_argv`` / ``status_url``) is unusable unless marked
    ``"idempotent": true``: after a crash its revert would be sent again.
    """
    kind = config.get("type")
    if kind not in BACKEND_TYPES:
        return f"type must be one of {', '.join(BACKEND_TYPES)}, not {kind!r}"
    services = config.get("services")
    if services is not None and not (
        isinstance(services, (list, tuple))
        and all(isinstance(s, str) and s for s in services)
    ):
        return "'services' must be a list of service names"
    if "idempotent" in config and not isinstance(config["idempotent"], bool):
        return "'idempotent' must be true or false"
    if kind == "command":
        if not _is_argv(config.get("argv")):
            return "command backend needs 'argv', a non-empty list of strings"
        if "verify_argv" in config and not _is_argv(config["verify_argv"]):
            return "'verify_argv' must be a non-empty list of strings"
    if kind == "webhook":
        if not str(config.get("url", "")).startswith(("http://", "https://")):
            return "webhook backend needs an http(s) 'url'"
        if not config.get("secret"):
            return "webhook backend needs a shared 'secret' to sign requests"
    if kind == "symlink" and not config.get("root"):
        return "symlink backend needs 'root' (holding releases/<version> and current)"
    verifier = {"command": "verify_argv", "webhook": "status_url"}.get(kind)
    if verifier and not config.get(verifier) and config.get("idempotent") is not True:
        return (
            f"{kind} backend has no '{verifier}', so after a crash it cannot tell"
            " whether an interrupted revert took effect and would run it again:"
            f" add '{verifier}' or, if running it twice is harmless, mark it"
            ' "idempotent": true'
        )
    return ""


def _values(params: dict[str, Any]) -> dict[str, str]:
    return {
        "service": params["service"],
        "environment": params.get("environment", ""),
        "version": params["version"],
        "previous_version": params.get("previous_version", ""),
        "artifact": params.get("artifact", ""),
        "deployment_id": str(params.get("deployment_id", "")),
    }


def _render(template: list[str], values: dict[str, str]) -> list[str]:
    try:
        return [part.format_map(values) for part in template]
    except (KeyError, ValueError) as exc:
        raise ActuatorError(f"bad argv template: {exc}", retryable=False) from None


class CommandBackend:
    def execute(self, config: dict, params: dict, ctx: StepContext) -> str:
        argv = _render(config["argv"], _values(params))
        timeout = float(
            config.get("timeout") or setting("ROLLBACK_DEFAULT_COMMAND_TIMEOUT")
        )
        code, out = run_argv(argv, timeout=timeout, env=config.get("env"))
        text = f"$ {' '.join(argv)}\n{out}".rstrip()
        if code != 0:
            raise ActuatorError(f"{argv[0]} exited with status {code}", output=text)
        return text

    def verify(self, config: dict, params: dict) -> bool:
        """Run ``verify_argv`` (if configured): verified when it prints the version."""
        template = config.get("verify_argv")
        if not template:
            return False
        argv = _render(template, _values(params))
        timeout = float(config.get("verify_timeout") or 30)
        try:
            code, out = run_argv(argv, timeout=timeout, env=config.get("env"))
        except ActuatorError:
            return False
        return code == 0 and out.strip() == params["version"]


def signature(secret: str, body: bytes) -> str:
    """Return the signature header value: ``sha256=<hex HMAC-SHA256 of body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookBackend:
    def execute(self, config: dict, params: dict, ctx: StepContext) -> str:
        import requests

        payload = {
            **_values(params),
            "run_id": ctx.run_id,
            "step_id": ctx.step_id,
            "action": "deployment.revert",
        }
        body = json.dumps(payload, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            setting("ROLLBACK_SIGNATURE_HEADER"): signature(config["secret"], body),
            # Same key on every attempt of this step: receivers can de-duplicate.
            "Idempotency-Key": f"rollback-step-{ctx.step_id}",
        }
        timeout = float(
            config.get("timeout") or setting("ROLLBACK_DEFAULT_WEBHOOK_TIMEOUT")
        )
        try:
            response = call_with_heartbeat(
                lambda: requests.post(
                    config["url"], data=body, headers=headers, timeout=timeout
                )
            )
        except requests.RequestException as exc:
            raise ActuatorError(
                f"webhook {config['url']} failed: {exc.__class__.__name__}: {exc}"
            ) from None
        text = f"POST {config['url']} -> {response.status_code}\n{response.text[:2000]}".rstrip()
        if not 200 <= response.status_code < 300:
            raise ActuatorError(
                f"webhook answered HTTP {response.status_code}", output=text
            )
        return text

    def verify(self, config: dict, params: dict) -> bool:
        """GET ``status_url`` (if configured): verified when its JSON version matches."""
        import requests

        url = config.get("status_url")
        if not url:
            return False
        try:
            response = call_with_heartbeat(
                lambda: requests.get(
                    url.format_map(_values(params)),
                    timeout=float(config.get("timeout") or 10),
                )
            )
            return (
                response.ok and str(response.json().get("version")) == params["version"]
            )
        except (requests.RequestException, ValueError, AttributeError):
            return False


class SymlinkBackend:
    @staticmethod
    def _paths(config: dict, params: dict) -> tuple[Path, Path]:
        root = Path(str(config["root"]).format_map(_values(params)))
        return root / "current", root / "releases" / params["version"]

    def execute(self, config: dict, params: dict, ctx: StepContext) -> str:
        current, target = self._paths(config, params)
        if not target.is_dir():
            raise ActuatorError(
                f"release directory {target} does not exist", retryable=False
            )
        if self.verify(config, params):
            return f"{current} already points at {target}"
        # Build the new link beside the old one and rename it over: readers
        # see the old release or the new one, never a missing link.
        tmp = current.with_name(f".current.{uuid.uuid4().hex}")
        relative = os.path.relpath(target, current.parent)
        os.symlink(relative, tmp)
        os.replace(tmp, current)
        return f"{current} -> {relative}"

    def verify(self, config: dict, params: dict) -> bool:
        current, target = self._paths(config, params)
        try:
            return current.is_symlink() and current.resolve() == target.resolve()
        except OSError:
            return False


BACKENDS = {
    "command": CommandBackend(),
    "webhook": WebhookBackend(),
    "symlink": SymlinkBackend(),
}


class DeploymentRevertActuator:
    """Revert a deployment through its backend.

    params: {deployment_id, service, environment, version (the version to go
    back to), previous_version (the version being reverted), artifact,
    backend (a name in ROLLBACK_DEPLOY_BACKENDS)}.
    """

    kind = "deployment_revert"

    def _backend(self, params: dict):
        try:
            _, config = backend_resolve(
                service=params["service"], name=params.get("backend")
            )
        except BackendNotConfigured as exc:
            raise ActuatorError(str(exc), retryable=False) from None
        return BACKENDS[config["type"]], config

    def timeout(self, params: dict[str, Any]) -> float:
        try:
            _, config = self._backend(params)
        except ActuatorError:
            return 60.0
        default = {
            "command": "ROLLBACK_DEFAULT_COMMAND_TIMEOUT",
            "webhook": "ROLLBACK_DEFAULT_WEBHOOK_TIMEOUT",
        }
        key = default.get(config["type"])
        return float(config.get("timeout") or (setting(key) if key else 30))

    def heartbeats(self, params: dict[str, Any]) -> bool:
        # Commands and webhook calls renew the lease while they run; a
        # symlink switch is instant.
        return True

    def plan(self, params: dict[str, Any]) -> str:
        backend = params.get("backend") or "?"
        return (
            f"revert {params['service']} in {params.get('environment')} from "
            f"{params.get('previous_version')} to {params['version']} via backend {backend}"
        )

    def verify(self, params: dict[str, Any]) -> bool:
        backend, config = self._backend(params)
        return backend.verify(config, params)

    def execute(self, params: dict[str, Any], ctx: StepContext) -> str:
        backend, config = self._backend(params)
        return backend.execute(config, params, ctx)
