"""Tiny data makers shared by the tests (imported, not collected)."""
