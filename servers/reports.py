"""`neuralops report`: regenerate the Phase A reports from real runs (placeholder)."""

from __future__ import annotations

from typing import Any


def add_command(sub: Any) -> None:
    del sub
