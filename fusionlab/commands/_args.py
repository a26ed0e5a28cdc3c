"""Argument types shared by the commands (standard library only: the CLI imports this to parse)."""

from __future__ import annotations

import argparse


def threads(text: str) -> int:
    """`--threads N`: torch CPU threads, 0 = torch's choice."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 0 (0 = torch's choice)")
    return value


def positive(text: str) -> int:
    """A whole number >= 1 (counts and sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 1")
    return value


def nonnegative(text: str) -> int:
    """A whole number >= 0 (0 usually means "no limit")."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 0")
    return value
