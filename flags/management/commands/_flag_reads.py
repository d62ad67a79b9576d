"""``manage.py flag list|show``: what each environment serves, read only.

The read subcommands of ``flag.py`` and the one-line summary of a flag
state that every subcommand prints after a change.
"""

from __future__ import annotations

from typing import Any

from flags import selectors
from flags.management.commands._flag_overrides import (
    OverrideOutput,
    format_time,
    format_value,
)
from flags.models import Environment, FlagState


def _serve_summary(serve: dict) -> str:
    if "variation" in serve:
        return serve["variation"]
    arms = [
        f"{arm['variation']} {arm['weight'] / 1000:g}%"
        for arm in serve.get("split", [])
    ]
    return "split " + " / ".join(arms)


def _state_summary(state: FlagState) -> str:
    if state.killed_at is not None:
        return f"KILLED -> {state.off_variation}"
    if not state.enabled:
        return f"off -> {state.off_variation}"
    rules = (
        f" +{len(state.rules)} rule{'s' if len(state.rules) != 1 else ''}"
        if state.rules
        else ""
    )
    return f"on: {_serve_summary(state.fallthrough)}{rules}"


def _serve_summary(serve: dict) -> str:
    if "variation" in serve:
        return serve["variation"]
    arms = [
        f"{arm['variation']} {arm['weight'] / 1000:g}%"
        for arm in serve.get("split", [])
    ]
    return "split " + " / ".join(arms)


def state_summary(state: FlagState) -> str:
    if state.killed_at is not None:
        return f"KILLED -> {state.off_variation}"
    if not state.enabled:
        return f"off -> {state.off_variation}"
    rules = (
        f" +{len(state.rules)} rule{'s' if len(state.rules) != 1 else ''}"
        if state.rules
        else ""
    )
    return f"on: {_serve_summary(state.fallthrough)}{rules}"


class FlagReads(OverrideOutput):
    """The read subcommands, and the state line the writes print."""

    def _state_line(self, state: FlagState) -> None:
        self.stdout.write(
            f"{state.flag.key} in {state.environment.key}: {state_summary(state)} "
            f"(state version {state.version})"
        )

    def _list(self, options: dict) -> None:
        flags = list(selectors.flag_list(include_archived=options["archived"]))
        if options.get("env"):
            environment = selectors.environment_get(options["env"])
            table = self.table(
                f"Flags in {environment.key} (ruleset version {environment.ruleset_version})",
                "flag",
                "type",
                "serving",
                "overrides",
                "version",
                "archived",
            )
            states = {
                state.flag_id: state
                for state in FlagState.objects.filter(environment=environment)
            }
            override_counts: dict[int, int] = {}
            for flag_id in environment.overrides.values_list("flag_id", flat=True):
                override_counts[flag_id] = override_counts.get(flag_id, 0) + 1
            for flag in flags:
                state = states.get(flag.pk)
                table.add_row(
                    flag.key,
                    flag.value_type,
                    state_summary(state) if state else "-",
                    str(override_counts.get(flag.pk, 0)),
                    str(state.version) if state else "-",
                    "yes" if flag.archived else "",
                )
        else:
            environments = list(Environment.objects.all())
            table = self.table(
                "Flags", "flag", "type", *[env.key for env in environments], "archived"
            )
            for flag in flags:
                by_env = {state.environment_id: state for state in flag.states.all()}
                table.add_row(
                    flag.key,
                    flag.value_type,
                    *[
                        state_summary(by_env[env.pk]) if env.pk in by_env else "-"
                        for env in environments
                    ],
                    "yes" if flag.archived else "",
                )
        if not flags:
            self.stdout.write(
                "No flags yet: create one with 'manage.py flag create KEY'."
            )
            return
        self.print(table)

    def _show(self, options: dict) -> None:
        flag = selectors.flag_get(options["flag"])
        header = self.table(None, "field", "value")
        header.show_header = False
        header.add_row("flag", flag.key + ("  (ARCHIVED)" if flag.archived else ""))
        header.add_row("name", flag.name)
        header.add_row("type", flag.value_type)
        header.add_row("owner", flag.owner or "-")
        header.add_row("tags", ", ".join(flag.tags) or "-")
        header.add_row("description", flag.description or "-")
        variations = self.table("Variations", "key", "value", "name")
        for variation in flag.variations:
            variations.add_row(
                variation["key"],
                format_value(variation["value"]),
                variation.get("name", ""),
            )
        states = self.table(
            "States",
            "environment",
            "serving",
            "off variation",
            "rules",
            "bucket by",
            "version",
            "killed",
        )
        for state in flag.states.select_related("environment").order_by(
            "environment__sort_order"
        ):
            rules = (
                "; ".join(
                    f"{n + 1}: {self._clauses_summary(rule['clauses'])} -> "
                    f"{_serve_summary(rule['serve'])}"
                    for n, rule in enumerate(state.rules)
                )
                or "-"
            )
            killed = (
                f"{format_time(state.killed_at)} {state.kill_reason}".strip()
                if state.killed_at
                else "-"
            )
            states.add_row(
                state.environment.key,
                state_summary(state),
                state.off_variation,
                rules,
                state.bucket_by,
                str(state.version),
                killed,
            )
        renderables: list[Any] = [header, variations, states]
        overrides = list(selectors.override_list(flag=flag))
        if overrides:
            renderables.append(
                self._overrides_table(f"Overrides ({len(overrides)})", overrides)
            )
        self.print(*renderables)

    @staticmethod
    def _clauses_summary(clauses: list[dict]) -> str:
        parts = []
        for clause in clauses:
            negate = "not " if clause.get("negate") else ""
            if clause["op"] == "segment":
                parts.append(f"{negate}segment {','.join(map(str, clause['values']))}")
            else:
                values = ",".join(map(str, clause.get("values", [])))
                parts.append(
                    f"{clause['attribute']} {negate}{clause['op']} {values}".strip()
                )
        return " and ".join(parts)
