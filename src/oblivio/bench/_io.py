"""Atomic result writers for the harness (they live in :mod:`oblivio._io`)."""

from oblivio._io import write_json, write_text

__all__ = ["write_json", "write_text"]
