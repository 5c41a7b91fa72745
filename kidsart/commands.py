"""Top-level commands that combine packages (`kidsart demo`)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        profile: str = typer.Option("tiny", help="Profile to run the demo on."),
        out: str = typer.Option("runs/demo", help="Output folder for samples, scores and logs."),
        port: int | None = typer.Option(None, help="Router port (default: the profile's)."),
    ) -> None:
        """Start the stack, score the bundled sample drawings, print a table, write JSON lines, stop."""
        from pathlib import Path

        from kidsart.demo import run_demo

        raise typer.Exit(run_demo(profile, Path(out), port))
