"""`kidsart build-base` and `kidsart validate`: the contract's commands."""
from __future__ import annotations

from typing import Optional

import typer


def run(app: typer.Typer) -> None:
    """Run a typer app the way every kidsart entry point does: one logging setup, typed errors as exit 2."""
    import sys

    from adapters.errors import KidsArtError
    from adapters.logs import setup_logging

    setup_logging()
    try:
        app()
    except KidsArtError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)


def register(app: typer.Typer) -> None:
    @app.command("build-base")
    def build_base(
        profile: str = typer.Option("tiny", help="Profile name (adapters/profiles/NAME.yaml) or path."),
        out: Optional[str] = typer.Option(None, help="Output folder (default: the profile's base.path)."),
        force: bool = typer.Option(False, help="Rebuild even if the folder exists."),
    ) -> None:
        """Build a profile's local base model (random init, local tokenizer) deterministically."""
        from pathlib import Path

        from adapters.base_builder import build_base as build
        from adapters.profiles import load_profile

        ref = build(load_profile(profile), Path(out) if out else None, force=force)
        typer.echo(f"{ref.model_id} {ref.content_hash}")

    @app.command("validate")
    def validate(profile: str = typer.Option("tiny", help="Profile name or path.")) -> None:
        """Validate a profile, its rubric, its base on disk and its deployment set."""
        from adapters.manifest import load_profile_deployment
        from adapters.profiles import load_profile

        loaded = load_profile(profile)
        deployment = load_profile_deployment(loaded)
        typer.echo(f"profile {loaded.name}: base {deployment.base.model_id} {deployment.base.content_hash}")
        for dim in deployment.dimensions:
            adapter = deployment.adapters[dim]
            typer.echo(f"  {dim:22s} {adapter.manifest.label:28s} {adapter.path}")
