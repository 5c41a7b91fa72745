"""`kidsart serve` and `kidsart score`."""
from __future__ import annotations

from typing import List, Optional

import typer

DEPLOYMENT_HELP = ("Deployment set YAML to serve on the profile's base instead of the profile's own "
                   "(e.g. DIR/deployment.yaml from `kidsart import-adapters`).")


def register(app: typer.Typer) -> None:
    from serve.district import cli as district_cli

    district_cli.register(app)

    @app.command("serve")
    def serve_command(
        profile: str = typer.Option("tiny", help="Profile name (adapters/profiles/NAME.yaml) or path."),
        port: Optional[int] = typer.Option(None, help="Router port (default: the profile's, 8000)."),
        engine_port: Optional[int] = typer.Option(None, help="Engine port (default: the profile's, 8100)."),
        deployment: Optional[str] = typer.Option(None, help=DEPLOYMENT_HELP),
    ) -> None:
        """Run the vLLM engine and the Ray Serve router in the foreground until Ctrl-C or SIGTERM."""
        from serve.foreground import run_foreground

        run_foreground(profile, router_port=port, engine_port=engine_port, deployment=deployment)

    @app.command("score")
    def score_command(
        images: List[str] = typer.Argument(..., help="Image files to score."),
        url: str = typer.Option("http://127.0.0.1:8000", help="Router URL (backend=router)."),
        backend: str = typer.Option("router", help="router: the running service; reference: transformers + PEFT in-process."),
        dimensions: Optional[List[str]] = typer.Option(None, "--dimensions", "-d", help="Dimensions to score (repeat; default all)."),
        profile: str = typer.Option("tiny", help="Profile for the reference backend."),
        deployment: Optional[str] = typer.Option(None, help=DEPLOYMENT_HELP + " (backend=reference)"),
        description: Optional[str] = typer.Option(None, help="The artwork's text description (rubrics that read one, e.g. creativity5; the feedback adapter reads it too)."),
        feedback: bool = typer.Option(False, "--feedback", help="Also write a teacher's comment beside the scores (needs a deployment with a feedback adapter)."),
    ) -> None:
        """Score images; one JSON line per image on stdout. Exit 1 if any image failed."""
        import json
        import sys
        from pathlib import Path

        from adapters.errors import KidsArtError

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
                scores, total = reference.rubric.with_points(raw)
                result = {"id": path.name, "rubric": reference.rubric.name, "scores": scores}
                if total is not None:
                    result[reference.rubric.total_name] = total
                if comment is not None:
                    result["feedback"] = comment
                return result
        else:
            import httpx

            from serve.client import score_file

            client = httpx.Client(timeout=300)

            def score_one(path: Path) -> dict:
                return score_file(url, path, dimensions=dims, request_id=path.name, client=client,
                                  description=description, feedback=feedback)

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
