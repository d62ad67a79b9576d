"""Imports go one way: canary -> rollback -> flags -> controlplane."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_purity import imported_modules

ROOT = Path(__file__).resolve().parents[1]
# Each layer may import only the layers after it in this list.
LAYERS = ("canary", "rollback", "flags", "controlplane")


def layer_violations(layer: str) -> list[str]:
    """Return ``path: module`` for every import of a layer above ``layer``."""
    above = LAYERS[: LAYERS.index(layer)]
    found = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        for name in imported_modules(source):
            if name.split(".")[0] in above:
                found.append(f"{path.relative_to(ROOT)}: {name}")
    return found


@pytest.mark.parametrize("layer", LAYERS)
def test_layer__imports__only_layers_below(layer):
    # Given / When
    found = layer_violations(layer)
    # Then
    assert found == [], "\n".join(found)


def test_layer_violations__controlplane_importing_flags__detected(
    tmp_path, monkeypatch
):
    # Given: a fake tree where controlplane imports flags
    (tmp_path / "controlplane").mkdir()
    (tmp_path / "controlplane" / "x.py").write_text("from flags.models import Flag\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    # When
    found = layer_violations("controlplane")
    # Then
    assert found == ["controlplane/x.py: flags.models"]
