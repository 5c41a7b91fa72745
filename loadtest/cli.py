"""Subcommands contributed by this package (filled in as its issues land)."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    return None
