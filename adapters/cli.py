"""`kidsart validate` (the contract's command) and the one CLI runner every entry point uses."""
from __future__ import annotations

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
