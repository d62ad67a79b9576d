"""Check templates: named, versioned sets of health checks rollouts reference.

Like Argo Rollouts' AnalysisTemplate: operators write a check set once
(``error_rate`` + ``p95_latency`` compare checks, say) and every rollout
names it (``check_template="payments"`` or ``"payments@3"``) instead of
retyping the definitions. Versions are immutable: ``check_template_update``
writes version N+1, and a rollout copies the checks of the version it
references at create (``Rollout.check_template`` records ``name@N``), so a
later version never changes a rollout that already exists.

The built-in ``default`` template is ``canary.templates_data.DEFAULT_CHECKS``
as version 0: ``check_template_get("default")`` returns it while no stored,
non-archived template named ``default`` exists, and ``default@0`` always
names it.
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Max

from canary.exceptions import Conflict, InvalidInput, NotFound
from canary.models import CheckTemplate
from canary.services.definitions import checks_clean
from controlplane.audit.services import audited_transaction, record_audit_event

BUILTIN_NAME = "default"
BUILTIN_VERSION = 0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_REFERENCE = re.compile(r"(?P<name>[^@]+)(?:@(?P<version>\d{1,9}))?")


def _name_clean(name: Any, field: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name.strip()):
        raise InvalidInput(
            f"{field}: 1 to 100 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit",
            field=field,
        )
    return name.strip()


def _description_clean(description: Any) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > 500:
        raise InvalidInput(
            "description: text of at most 500 characters", field="description"
        )
    return description.strip()


def _template_checks_clean(checks: Any) -> list[dict]:
    if not isinstance(checks, list) or not checks:
        raise InvalidInput(
            "checks: a template needs a non-empty list of checks", field="checks"
        )
    return checks_clean(checks)


def _builtin() -> CheckTemplate:
    """Return the built-in ``default`` template (not a stored row)."""
    from canary.templates_data import DEFAULT_CHECKS

    return CheckTemplate(
        name=BUILTIN_NAME,
        version=BUILTIN_VERSION,
        description="Built in: canary.templates_data.DEFAULT_CHECKS (error rate and "
        "p95 latency compared with the merchants' own baselines).",
        checks=checks_clean(DEFAULT_CHECKS),
        created_by="built-in",
    )


def _as_dict(template: CheckTemplate) -> dict:
    return {
        "name": template.name,
        "version": template.version,
        "description": template.description,
        "checks": template.checks,
        "archived": template.archived,
    }


_SYMBOLS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "="}


def check_rule_text(check: dict) -> str:
    """Return a check definition's rule in words, e.g. ``< 0.05`` or
    ``not worse by 0.01, alpha 0.05`` (for listings: command, admin)."""
    if check["mode"] == "absolute":
        return f"{_SYMBOLS.get(check['comparator'])} {check['threshold']:g}"
    if check["mode"] == "relative":
        return f"within {check['relative_tolerance']:.0%} of baseline"
    if check["mode"] == "compare":
        return f"not worse by {check['margin']:g}, alpha {check['alpha']:g}"
    return f"treatment vs control, alpha {check['threshold'] or 0.05:g}"


def check_template_parse(reference: Any) -> tuple[str, int | None]:
    """Return ``(name, version)`` of ``"name"`` or ``"name@3"``.

    Raise InvalidInput (field ``check_template``) for anything else.
    """
    if not isinstance(reference, str) or not (
        match := _REFERENCE.fullmatch(reference.strip())
    ):
        raise InvalidInput(
            f"check_template: {reference!r} is not NAME or NAME@VERSION",
            field="check_template",
        )
    name = _name_clean(match["name"], field="check_template")
    return name, int(match["version"]) if match["version"] is not None else None


def check_template_get(
    name: str, version: int | None = None, *, include_archived: bool = True
) -> CheckTemplate:
    """Return version ``version`` of template ``name``, or its latest one.

    Without a version: the highest non-archived version; for ``default``
    with none stored (or all archived), the built-in version 0. With a
    version: that row (0 of ``default`` is the built-in); an archived one
    only with ``include_archived`` (rollouts pass False). Raise NotFound
    for an unknown name or version (and when every version is archived),
    Conflict for an archived version refused.
    """
    name = _name_clean(name)
    rows = CheckTemplate.objects.filter(name=name)
    if version is None:
        latest = rows.filter(archived=False).order_by("-version").first()
        if latest is not None:
            return latest
        if name == BUILTIN_NAME:
            return _builtin()
        if rows.exists():
            raise NotFound(
                f"check template {name!r}: every version is archived",
                field="check_template",
            )
        raise NotFound(f"unknown check template {name!r}", field="check_template")
    if name == BUILTIN_NAME and version == BUILTIN_VERSION:
        return _builtin()
    row = rows.filter(version=version).first()
    if row is None:
        raise NotFound(
            f"check template {name!r} has no version {version}", field="check_template"
        )
    if row.archived and not include_archived:
        raise Conflict(
            f"check template {row.reference} is archived", field="check_template"
        )
    return row


def check_template_resolve(reference: Any) -> CheckTemplate:
    """Return the template a rollout's ``check_template`` reference names.

    ``"name"`` is its latest non-archived version, ``"name@3"`` version 3
    (refused with Conflict when archived). Raise as ``check_template_parse``
    and ``check_template_get`` do.
    """
    name, version = check_template_parse(reference)
    return check_template_get(name, version, include_archived=False)


def check_template_expand(reference: Any, checks: list[dict]) -> tuple[list[dict], str]:
    """Return the template's checks followed by ``checks`` (already cleaned),
    and the ``name@version`` reference to record on the rollout.

    Raise InvalidInput (``checks[i].name``) when an explicit check has the
    name of a template check, and as ``check_template_resolve`` does.
    """
    template = check_template_resolve(reference)
    names = {check["name"] for check in template.checks}
    for i, check in enumerate(checks):
        if check["name"] in names:
            raise InvalidInput(
                f"checks[{i}].name: {check['name']!r} is already a check of template "
                f"{template.reference}",
                field=f"checks[{i}].name",
            )
    return [*checks_clean(template.checks), *checks], template.reference


def check_template_list(*, include_archived: bool = False) -> list[CheckTemplate]:
    """Return the latest version of each template, by name.

    Without ``include_archived``, a template whose versions are all archived
    is left out and the latest non-archived version is shown. The built-in
    ``default`` is listed while no stored one replaces it.
    """
    rows = CheckTemplate.objects.all()
    if not include_archived:
        rows = rows.filter(archived=False)
    latest: dict[str, CheckTemplate] = {}
    for row in rows.order_by("name", "-version"):
        latest.setdefault(row.name, row)
    if BUILTIN_NAME not in latest:
        latest[BUILTIN_NAME] = _builtin()
    return [latest[name] for name in sorted(latest)]


def check_template_versions(name: str) -> list[CheckTemplate]:
    """Return every version of template ``name``, newest first (the built-in
    version 0 last for ``default``). Raise NotFound for an unknown name."""
    name = _name_clean(name)
    rows = list(CheckTemplate.objects.filter(name=name).order_by("-version"))
    if name == BUILTIN_NAME:
        rows.append(_builtin())
    if not rows:
        raise NotFound(f"unknown check template {name!r}", field="check_template")
    return rows


def check_template_create(
    *, actor: Any, name: Any, checks: Any, description: Any = ""
) -> CheckTemplate:
    """Create version 1 of template ``name``; writes ``check_template.created``.

    ``checks`` is validated by ``checks_clean`` (errors name
    ``checks[i].field``) and stored cleaned. Raise InvalidInput for bad
    input, Conflict when a template of that name exists (change it with
    ``check_template_update``).
    """
    name = _name_clean(name)
    description = _description_clean(description)
    clean = _template_checks_clean(checks)
    with audited_transaction():
        if CheckTemplate.objects.filter(name=name).exists():
            raise Conflict(
                f"check template {name!r} exists: change it with a new version",
                field="name",
            )
        template = CheckTemplate(
            name=name,
            version=1,
            description=description,
            checks=clean,
            created_by=getattr(actor, "name", "") or str(actor),
        )
        template.full_clean()
        template.save()
        record_audit_event(
            actor=actor,
            action="check_template.created",
            target=template,
            after=_as_dict(template),
        )
    return template


def check_template_update(
    *, actor: Any, name: Any, checks: Any, description: Any = None
) -> CheckTemplate:
    """Write the next version of template ``name``; writes
    ``check_template.version_created``.

    Versions are immutable: this adds version N+1 (N the highest, archived
    or not) with ``checks`` and ``description`` (default: the latest
    version's). Identical to the latest version: returned unchanged, no
    event. An update of a template whose versions are all archived brings
    it back. Raise InvalidInput for bad input, NotFound for an unknown name.
    """
    name = _name_clean(name)
    clean = _template_checks_clean(checks)
    with audited_transaction():
        rows = CheckTemplate.objects.select_for_update().filter(name=name)
        latest = rows.order_by("-version").first()
        if latest is None:
            raise NotFound(f"unknown check template {name!r}", field="name")
        description = (
            latest.description
            if description is None
            else _description_clean(description)
        )
        if (
            not latest.archived
            and latest.checks == clean
            and latest.description == description
        ):
            return latest
        template = CheckTemplate(
            name=name,
            version=(rows.aggregate(top=Max("version"))["top"] or 0) + 1,
            description=description,
            checks=clean,
            created_by=getattr(actor, "name", "") or str(actor),
        )
        template.full_clean()
        template.save()
        record_audit_event(
            actor=actor,
            action="check_template.version_created",
            target=template,
            before=_as_dict(latest),
            after=_as_dict(template),
        )
    return template


def check_template_archive(
    *, actor: Any, name: Any, version: Any = None
) -> list[CheckTemplate]:
    """Archive version ``version`` of template ``name``, or every version.

    New rollouts no longer pick an archived version (``name`` falls back
    to the latest version still live); rollouts that use it keep their
    checks. One ``check_template.archived`` event per version archived;
    already archived: nothing changes, no event. Return the versions
    archived now. Raise InvalidInput for a bad version, NotFound for an
    unknown name or version, Conflict for the built-in ``default@0``.
    """
    name = _name_clean(name)
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise InvalidInput("version: a version number", field="version")
    if name == BUILTIN_NAME and version == BUILTIN_VERSION:
        raise Conflict(
            "default@0 is built in: it cannot be archived (store a template named "
            "default to replace it)",
            field="version",
        )
    archived: list[CheckTemplate] = []
    with audited_transaction():
        rows = CheckTemplate.objects.select_for_update().filter(name=name)
        if not rows.exists():
            raise NotFound(f"unknown check template {name!r}", field="name")
        if version is not None:
            rows = rows.filter(version=version)
            if not rows.exists():
                raise NotFound(
                    f"check template {name!r} has no version {version}",
                    field="version",
                )
        for template in rows.filter(archived=False).order_by("version"):
            template.archived = True
            template.save(update_fields=["archived"])
            record_audit_event(
                actor=actor,
                action="check_template.archived",
                target=template,
                before={"archived": False},
                after={"archived": True},
                details={"name": name, "version": template.version},
            )
            archived.append(template)
    return archived


__all__ = [
    "check_rule_text",
    "check_template_archive",
    "check_template_create",
    "check_template_expand",
    "check_template_get",
    "check_template_list",
    "check_template_parse",
    "check_template_resolve",
    "check_template_update",
    "check_template_versions",
]
