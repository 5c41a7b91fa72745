"""`kidsart validate` (the contract's command) and the one CLI runner every entry point uses."""

from __future__ import annotations

import typer


def run(app: typer.Typer) -> None:
    """Run a typer app the way every kidsart entry point does: one logging setup, typed errors as exit 2."""
    import sys

    from pydantic import ValidationError

    from adapters.errors import KidsArtError
    from adapters.logs import setup_logging

    setup_logging()
    try:
        app()
    except KidsArtError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)
    except ValidationError as exc:  # a command's options checked by the config model the code uses
        problems = "; ".join(
            f"--{'.'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in exc.errors()
        )
        typer.secho(f"error: invalid options: {problems}", err=True, fg="red")
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

    @app.command("import-adapters")
    def import_adapters_command(
        source: str = typer.Argument(
            ..., help="The release folder (dimension_<dim>/ and dimension_<dim>/best_model/)."
        ),
        format: str = typer.Option("kidsartbench", "--format", help="Source layout: kidsartbench."),
        profile: str = typer.Option(..., "--profile", help="Profile whose base the adapters are served on."),
        out: str = typer.Option(
            ..., "--out", help="Output folder: one adapter folder per dimension and deployment.yaml."
        ),
        trust_base: bool = typer.Option(
            False,
            "--trust-base",
            help="Accept a base named differently from the profile's (the tensor shapes are still checked).",
        ),
        force: bool = typer.Option(False, "--force", help="Replace a non-empty --out."),
    ) -> None:
        """Import published adapters as they were trained: checked, with manifests and a deployment set."""
        import shlex
        import sys

        from adapters.importer import import_adapters
        from adapters.manifest import load_deployment
        from adapters.profiles import load_profile

        loaded = load_profile(profile)
        command = "kidsart " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        path = import_adapters(
            source, layout=format, profile=loaded, out=out, command=command, trust_base=trust_base, force=force
        )
        deployment = load_deployment(path, max_lora_rank=loaded.engine.max_lora_rank)
        for dim in deployment.dimensions:
            adapter = deployment.adapters[dim]
            taken = adapter.manifest.provenance.source.checkpoint.replace("_", " ")
            typer.echo(f"  {dim:22s} {adapter.manifest.label:36s} from the {taken} checkpoint")
        typer.echo(
            f"wrote {path} (prompt format {deployment.prompt_format.name}); serve it with "
            f"`kidsart serve --profile {loaded.name} --deployment {path}`"
        )
