"""Test-only app whose second migration is an irreversible RunPython."""
