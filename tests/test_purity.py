"""Pure modules import no Django: the client and server share the engine."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PURE_MODULES = [
    path
    for path in (
        "flags/engine.py",
        "flags/engine_model.py",
        "flags/engine_compile.py",
        "flags/engine_delta.py",
        "flags/validation.py",
        "canary/health.py",
        "canary/sequential.py",
        "canary/attribution.py",
        "canary/confseq.py",
        "canary/exceedance.py",
        "canary/power.py",
        "canary/windows.py",
        "canary/verification.py",
    )
    if (ROOT / path).exists()
]
FORBIDDEN = ("django", "rest_framework")


def imported_modules(source: str) -> set[str]:
    """Return every module name imported anywhere in ``source`` (nested too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names.add(str(node.args[0].value))
    return names


def forbidden_imports(source: str) -> list[str]:
    return sorted(
        name for name in imported_modules(source) if name.split(".")[0] in FORBIDDEN
    )


@pytest.mark.parametrize("path", PURE_MODULES)
def test_pure_module__source__imports_no_django(path):
    # Given
    source = (ROOT / path).read_text(encoding="utf-8")
    # When
    found = forbidden_imports(source)
    # Then
    assert found == [], f"{path} imports {found}"


@pytest.mark.parametrize(
    "source, found",
    [
        ("import django", ["django"]),
        ("from django.db import models", ["django.db"]),
        ("def f():\n    from rest_framework import views", ["rest_framework"]),
        ("import djangoish\nimport mmh3", []),
    ],
)
def test_forbidden_imports__sample_sources__detected(source, found):
    # Given / When / Then (the checker itself can fail)
    assert forbidden_imports(source) == found


def test_pure_modules__engine__is_checked():
    # Given / When / Then
    assert "flags/engine.py" in PURE_MODULES
