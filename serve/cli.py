"""`kidsart serve` and `kidsart score`."""

from __future__ import annotations

from pathlib import Path

import typer

DEPLOYMENT_HELP = (
    "Deployment set YAML to serve on the profile's base instead of the profile's own "
    "(e.g. DIR/deployment.yaml from `kidsart import-adapters`)."
)


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`. Long only because each command is a nested function whose typer
    options are declared in its signature; each body is short and calls into the package."""
    from serve.district import cli as district_cli
    from serve.review import cli as review_cli

    district_cli.register(app)
    review_cli.register(app)

    @app.command("serve")
    def serve_command(
        profile: str = typer.Option("tiny", help="Profile name (adapters/profiles/NAME.yaml) or path."),
        port: int | None = typer.Option(None, help="Router port (default: the profile's, 8000)."),
        deployment: str | None = typer.Option(None, help=DEPLOYMENT_HELP),
        host: str | None = typer.Option(
            None, help="Address the router listens on (default: the profile's, 127.0.0.1)."
        ),
        api_key_file: str | None = typer.Option(
            None, help="File of API keys, one per line (with or instead of $KIDSART_API_KEYS)."
        ),
        insecure_no_auth: bool = typer.Option(
            False,
            "--insecure-no-auth",
            help="Serve without API keys on a non-loopback address (anyone who can reach it can use it).",
        ),
    ) -> None:
        """Run the engine replicas and the router (one Ray Serve application) in the foreground until Ctrl-C or SIGTERM.

        API keys come from $KIDSART_API_KEYS (comma-separated) and --api-key-file; without any the
        router serves on a loopback address only, unless --insecure-no-auth. Admin keys (promote and roll
        back adapter sets, `kidsart adapters`) come from $KIDSART_ADMIN_KEYS."""
        from serve.foreground import run_foreground
        from serve.keys import load_admin_keys, load_api_keys

        keys = load_api_keys(api_key_file)
        run_foreground(
            profile,
            router_port=port,
            deployment=deployment,
            router_host=host,
            api_keys=keys,
            admin_keys=load_admin_keys(keys),
            insecure_no_auth=insecure_no_auth,
        )

    @app.command("deploy-config")
    def deploy_config_command(
        profile: str = typer.Option(
            ..., "--profile", help="Profile name (adapters/profiles/NAME.yaml) or path, as the cluster will find it."
        ),
        out: Path = typer.Option(..., "--out", help="File to write (YAML)."),
        rayservice: bool = typer.Option(
            False,
            "--rayservice",
            help="Write a KubeRay RayService manifest embedding the Serve config (spec.serveConfigV2).",
        ),
        deployment: str | None = typer.Option(None, help=DEPLOYMENT_HELP),
        insecure_no_auth: bool = typer.Option(
            False, "--insecure-no-auth", help="Let the router serve beyond loopback without API keys."
        ),
    ) -> None:
        """Write the Ray Serve config (for `serve run` / `serve deploy`) or the KubeRay RayService of a profile.

        The file is validated with Ray's own schema before it is written."""
        from adapters.profiles import load_profile
        from serve.deploy_config import render, validate

        loaded = load_profile(profile, deployment)
        text = render(
            loaded,
            rayservice=rayservice,
            profile_ref=profile,
            deployment_ref=deployment,
            insecure_no_auth=insecure_no_auth,
        )
        validate(text)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out} ({'RayService' if rayservice else 'Ray Serve config'} of profile {loaded.name!r})")

    @app.command("score")
    def score_command(
        images: list[str] = typer.Argument(..., help="Image files to score."),
        url: str = typer.Option("http://127.0.0.1:8000", help="Router URL (backend=router)."),
        backend: str = typer.Option(
            "router", help="router: the running service; reference: transformers + PEFT in-process."
        ),
        dimensions: list[str] | None = typer.Option(
            None, "--dimensions", "-d", help="Dimensions to score (repeat; default all)."
        ),
        profile: str = typer.Option("tiny", help="Profile for the reference backend."),
        deployment: str | None = typer.Option(None, help=DEPLOYMENT_HELP + " (backend=reference)"),
        description: str | None = typer.Option(
            None,
            help="The artwork's text description (rubrics that read one, e.g. creativity5; the feedback adapter reads "
            "it too).",
        ),
        feedback: bool = typer.Option(
            False,
            "--feedback",
            help="Also write a teacher's comment beside the scores (needs a deployment with a feedback adapter).",
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", help="The router's API key (default: $KIDSART_API_KEY).", show_default=False
        ),
    ) -> None:
        """Score images; one JSON line per image on stdout. Exit 1 if any image failed.

        (Long by its typer options: the work is ScoringClient's and the reference backend's.)"""
        import json
        import sys

        from adapters.errors import KidsArtError
        from serve.protocol import ScoreAnswer

        if backend not in ("router", "reference"):
            raise typer.BadParameter("backend must be 'router' or 'reference'", param_hint="--backend")
        dims = list(dimensions) if dimensions else None
        failed = 0
        if backend == "reference":
            from adapters.profiles import load_profile
            from serve.reference import ReferenceBackend

            loaded = load_profile(profile, deployment)
            reference = ReferenceBackend(loaded)
            reference.rubric.select(dims)
            if feedback:
                reference.check_feedback()

            def score_one(path: Path) -> dict:
                data = path.read_bytes()  # an OSError is reported per image below
                comment = None
                if feedback:
                    raw, comment = reference.score_with_feedback(data, dims, description)
                else:
                    raw = reference.score_bytes(data, dims, description)
                return ScoreAnswer.of(reference.rubric, path.name, raw, comment).model_dump(exclude_none=True)
        else:
            from serve.client import ScoringClient

            client = ScoringClient(url, api_key=api_key)

            def score_one(path: Path) -> dict:
                return client.score_file(
                    path, dimensions=dims, request_id=path.name, description=description, feedback=feedback
                ).model_dump(exclude_none=True)

        for image in images:
            path = Path(image)
            try:
                result = score_one(path)
                line = {"image": str(path), **result}
            except (KidsArtError, OSError) as exc:
                failed += 1
                line = {"image": str(path), "error": str(exc)}
            sys.stdout.write(json.dumps(line) + "\n")
            sys.stdout.flush()
        if failed:
            typer.secho(f"{failed} of {len(images)} images failed", err=True, fg="red")
            raise typer.Exit(1)
