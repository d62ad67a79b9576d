"""Test-only app with three reversible migrations (table, column + data, index)."""
