"""Commands built on the services (the local stack, the demo, reports)."""

from __future__ import annotations

from typing import Any


def add_commands(sub: Any) -> None:
    """Register extra subcommands on the ``neuralops`` parser."""
    del sub
