"""Shared, offline test helpers (importable from any test directory)."""
