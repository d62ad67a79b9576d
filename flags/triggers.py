"""Read what a monitoring system sent to an alert trigger's URL.

Two shapes are accepted:

- Prometheus Alertmanager's webhook payload (``version`` "4"): ``status``
  ``firing`` asks for a kill, ``resolved`` for a restore (which the trigger
  may refuse to do);
- a plain POST: an empty body (a kill) or ``{"action": "kill"|"restore"}``,
  optionally with a ``reason``.

The body is untrusted: everything is checked for type and size, and a
refusal names the field (``InvalidInput``). What is kept for the audit log is
bounded (``MAX_RECORDED_ALERTS`` alerts, label values cut at
``MAX_RECORDED_VALUE`` characters). No Django here: the parser is pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.exceptions import InvalidInput

KILL = "kill"
RESTORE = "restore"

MAX_BODY_BYTES = 256 * 1024
MAX_ALERTS = 1000  # Alertmanager's own max_alerts is unbounded by default
MAX_LABELS = 64  # per label set (labels, annotations, common/group labels)
MAX_NAME = 200  # a label name
MAX_VALUE = 4096  # a label value or an annotation
MAX_RECORDED_ALERTS = 10
MAX_RECORDED_VALUE = 200
MAX_REASON = 500  # a flag state's kill_reason

_ALERTMANAGER_KEYS = frozenset(
    {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
)
_PLAIN_KEYS = frozenset({"action", "reason"})


@dataclass(frozen=True, slots=True)
class TriggerCall:
    """What a call asks for, and what the audit event records about it."""

    action: str  # kill | restore
    source: str  # alertmanager | plain
    alertname: str = ""
    status: str = ""  # firing | resolved (Alertmanager only)
    summary: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alert_count: int = 0
    common_labels: dict[str, str] = field(default_factory=dict)

    def reason(self, trigger_name: str) -> str:
        """Return the kill or restore reason naming the alert and the trigger."""
        if self.source == "alertmanager":
            text = f"alert {self.alertname or 'unnamed'} {self.status}"
            if self.summary:
                text += f": {self.summary}"
        else:
            text = self.summary or f"{self.action} requested"
        return f"{text} (trigger {trigger_name!r})"[:MAX_REASON]

    def audit_details(self) -> dict[str, Any]:
        """Return the bounded record of the call for the audit event."""
        details: dict[str, Any] = {"source": self.source, "action": self.action}
        if self.source == "alertmanager":
            details.update(
                status=self.status,
                alertname=self.alertname,
                common_labels=self.common_labels,
                alerts=self.alerts,
                alert_count=self.alert_count,
            )
        if self.summary:
            details["summary"] = self.summary
        return details


def parse_call(body: Any) -> TriggerCall:
    """Return the call ``body`` (parsed JSON, ``{}`` when empty) stands for.

    Raises InvalidInput naming the offending field.
    """
    if not isinstance(body, dict):
        raise InvalidInput("body: must be a JSON object", field="body")
    if body.keys() & {"alerts", "status", "version"}:
        return _alertmanager(body)
    unknown = sorted(body.keys() - _PLAIN_KEYS)
    if unknown:
        name = _cut(unknown[0], MAX_NAME)
        raise InvalidInput(
            f"{name}: unknown field; send an Alertmanager payload or "
            '{"action": "kill"|"restore"}',
            field=name,
        )
    action = body.get("action", KILL)
    if action not in (KILL, RESTORE):
        raise InvalidInput('action: must be "kill" or "restore"', field="action")
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise InvalidInput(
            f"reason: must be a string of at most {MAX_REASON} characters",
            field="reason",
        )
    return TriggerCall(action=action, source="plain", summary=reason.strip())


def _alertmanager(body: dict[str, Any]) -> TriggerCall:
    version = body.get("version", "4")
    if version != "4":
        raise InvalidInput(
            'version: only Alertmanager webhook version "4" is understood',
            field="version",
        )
    status = body.get("status")
    if status not in ("firing", "resolved"):
        raise InvalidInput('status: must be "firing" or "resolved"', field="status")
    alerts = body.get("alerts", [])
    if not isinstance(alerts, list):
        raise InvalidInput("alerts: must be a list", field="alerts")
    if len(alerts) > MAX_ALERTS:
        raise InvalidInput(
            f"alerts: at most {MAX_ALERTS} alerts per call", field="alerts"
        )
    common = _labels(body.get("commonLabels", {}), "commonLabels")
    group = _labels(body.get("groupLabels", {}), "groupLabels")
    annotations = _labels(body.get("commonAnnotations", {}), "commonAnnotations")
    recorded = []
    first_name = ""
    for index, alert in enumerate(alerts):
        where = f"alerts[{index}]"
        if not isinstance(alert, dict):
            raise InvalidInput(f"{where}: must be an object", field=where)
        labels = _labels(alert.get("labels", {}), f"{where}.labels")
        alert_annotations = _labels(
            alert.get("annotations", {}), f"{where}.annotations"
        )
        alert_status = alert.get("status", status)
        if alert_status not in ("firing", "resolved"):
            raise InvalidInput(
                f'{where}.status: must be "firing" or "resolved"',
                field=f"{where}.status",
            )
        if not first_name and (alert_status == status or not recorded):
            first_name = labels.get("alertname", "")
        if not annotations and alert_annotations:
            annotations = alert_annotations
        if len(recorded) < MAX_RECORDED_ALERTS:
            recorded.append({"status": alert_status, "labels": _recorded(labels)})
    alertname = common.get("alertname") or group.get("alertname") or first_name
    summary = annotations.get("summary") or annotations.get("description") or ""
    return TriggerCall(
        action=KILL if status == "firing" else RESTORE,
        source="alertmanager",
        alertname=_cut(alertname, MAX_RECORDED_VALUE),
        status=status,
        summary=_cut(summary, MAX_RECORDED_VALUE),
        alerts=recorded,
        alert_count=len(alerts),
        common_labels=_recorded(common),
    )


def _labels(value: Any, where: str) -> dict[str, str]:
    """Return a label set (names and values strings, bounded) or refuse it."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be an object of strings", field=where)
    if len(value) > MAX_LABELS:
        raise InvalidInput(f"{where}: at most {MAX_LABELS} entries", field=where)
    for name, text in value.items():
        if len(name) > MAX_NAME:
            raise InvalidInput(
                f"{where}: a name is over {MAX_NAME} characters", field=where
            )
        if not isinstance(text, str):
            raise InvalidInput(
                f"{where}.{_cut(name, MAX_NAME)}: must be a string",
                field=f"{where}.{name}",
            )
        if len(text) > MAX_VALUE:
            raise InvalidInput(
                f"{where}.{name}: at most {MAX_VALUE} characters",
                field=f"{where}.{name}",
            )
    return value


def _recorded(labels: dict[str, str]) -> dict[str, str]:
    return {name: _cut(text, MAX_RECORDED_VALUE) for name, text in labels.items()}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
