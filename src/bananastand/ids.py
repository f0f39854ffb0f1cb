"""Identifiers: random, URL-safe, unguessable."""

from __future__ import annotations

import secrets


def new_id() -> str:
    """A 24-hex-character random id (96 bits)."""
    return secrets.token_hex(12)
