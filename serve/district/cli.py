"""`kidsart score-district`: score every artwork of a district, resumably, and write the report.

Register with `serve.district.cli.register(app)`; only typer is imported here.
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`. Long only because each command is a nested function whose typer
    options are declared in its signature; each body is short and calls into the package."""

    @app.command("score-district")
    def score_district(
        input: Path = typer.Argument(
            ...,
            help="District folder (school/grade/class/... folders), a CSV manifest with a 'path' column, or an OpenAI "
            "batch input file (.jsonl: one /v1/score or /v1/chat/completions request per line).",
        ),
        out: Path = typer.Option(
            ..., "--out", help="Output folder: journal.jsonl, scores.csv, scores.parquet, report.html."
        ),
        url: str | None = typer.Option(
            None, "--url", help="Router URL (e.g. http://127.0.0.1:8000); from outside a Ray cluster."
        ),
        profile: str | None = typer.Option(
            None, "--profile", help="Without --url: start this profile's stack, score, stop it."
        ),
        rubric: str | None = typer.Option(
            None,
            "--rubric",
            help="Rubric of the scores (default: the profile's, or the one the router at --url serves).",
        ),
        deployment: str | None = typer.Option(
            None,
            "--deployment",
            help="With --profile: serve this deployment set (e.g. from `kidsart import-adapters`) on the profile's "
            "base.",
        ),
        concurrency: int = typer.Option(32, "--concurrency", min=1, help="Images in flight at once."),
        resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
        dimensions: str = typer.Option(
            "", "--dimensions", help="Comma-separated dimensions (default: all of the rubric)."
        ),
        levels: str = typer.Option("school,grade,class", "--levels", help="Names of the folder levels below the root."),
        pipeline: str = typer.Option(
            "async", "--pipeline", help="'async' (local asyncio client) or 'ray' (Ray Data pipeline)."
        ),
        ray_address: str | None = typer.Option(
            None,
            "--ray-address",
            help="With --pipeline ray and no --url: the Ray cluster that serves the application (e.g. auto, or "
            "HEAD:6379); images are scored through its engine deployment with Ray Serve handles.",
        ),
        ray_actors: int = typer.Option(
            1, "--ray-actors", min=1, help="Scoring actors in the Ray pipeline (raise on a cluster)."
        ),
        ray_batch_size: int = typer.Option(
            8, "--ray-batch-size", min=1, help="Images per Ray Data batch (4 batches in flight per actor)."
        ),
        router_port: int | None = typer.Option(
            None, "--router-port", help="With --profile: router port (default: the profile's)."
        ),
        max_outage: float | None = typer.Option(
            None,
            "--max-outage",
            min=0,
            help="Stop (resumably) after this many seconds without a usable answer (default: the client retry "
            "policy's max_outage_s).",
        ),
        max_thumbnails: int = typer.Option(400, "--max-thumbnails", help="Thumbnails embedded in report.html."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write report.html."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
        feedback: bool = typer.Option(
            False,
            "--feedback",
            help="Also ask for a teacher's comment per artwork (CSV column `feedback`, shown on the report's cards).",
        ),
        input_format: str = typer.Option(
            "auto",
            "--input-format",
            help="auto, folder, csv or openai-batch: how INPUT is read (auto: a folder, a .csv, a .jsonl batch file).",
        ),
        openai_batch_output: Path | None = typer.Option(
            None,
            "--openai-batch-output",
            help="With an OpenAI batch input: write the Batch API's output JSONL here (answered lines, in input order) "
            "and its errors to <stem>.errors.jsonl beside it.",
        ),
        api_key: str | None = typer.Option(
            None, "--api-key", help="The router's API key (default: $KIDSART_API_KEY).", show_default=False
        ),
    ) -> None:
        """Score every artwork of a district on all dimensions: durable journal, --resume, CSV/Parquet, HTML report.

        Exit code: 0 all rows scored, 1 some rows are errors (bad files), 3 the run is incomplete (resume it).
        (Long by its typer options: the run itself is serve.district.session.run_district.)
        """
        import json

        from adapters.errors import ConfigError
        from serve.client import use_api_key
        from serve.district.job import DistrictJobConfig, check_config
        from serve.district.session import Target, run_district

        use_api_key(api_key)  # the job's clients, local or in Ray workers, read it from the environment

        if ray_address and pipeline != "ray":
            raise ConfigError("--ray-address needs --pipeline ray")
        if ray_address and profile:
            raise ConfigError(
                "--profile starts a stack here; --ray-address joins a cluster that already serves: give one"
            )
        if not url and not profile and not ray_address:
            raise ConfigError(
                "give --url of a running router, --pipeline ray --ray-address of a Ray cluster that "
                "serves the application, or --profile to start the stack for this run"
            )
        if deployment and not profile:
            raise ConfigError("--deployment needs --profile (the base it is served on)")
        config = DistrictJobConfig(
            input=input,
            input_format=input_format,
            openai_batch_output=openai_batch_output,
            out=out,
            resume=resume,
            concurrency=concurrency,
            dimensions=[d.strip() for d in dimensions.split(",") if d.strip()],
            levels=[x.strip() for x in levels.split(",") if x.strip()],
            pipeline=pipeline,
            ray_address=ray_address,
            ray_actors=ray_actors,
            ray_batch_size=ray_batch_size,
            max_thumbnails=max_thumbnails,
            report=report,
            progress=progress,
            feedback=feedback,
            **({} if max_outage is None else {"max_outage_s": max_outage}),
        )
        check_config(config)  # before a stack is started for the run
        target = Target(url=url, profile=profile, deployment=deployment, rubric=rubric, router_port=router_port)
        try:
            result = run_district(config, target, announce=lambda text: typer.echo(text, err=True))
        except KeyboardInterrupt:
            typer.echo(
                f"\ninterrupted: every counted result is in {out}/journal.jsonl; rerun with --resume to continue",
                err=True,
            )
            raise typer.Exit(130) from None
        summary = result.summary
        (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False), encoding="utf-8")
        typer.echo(
            f"{summary['inputs']} inputs: {summary['ok']} scored, {summary['errors']} errors, "
            f"{summary['pending']} pending; {summary['duplicate_inputs']} duplicates, "
            f"{summary['skipped_files']} files skipped"
        )
        if summary["error_types"]:
            typer.echo("errors by type: " + ", ".join(f"{k}={v}" for k, v in sorted(summary["error_types"].items())))
        typer.echo(
            f"this run: {summary['requests_this_run']} images sent in {summary['scoring_s']:.1f} s "
            f"({summary['images_per_s']:.2f} images/s), {summary['retries']} retries, "
            f"{summary['already_done_before_this_run']} already done before"
        )
        for path in result.files:
            typer.echo(f"wrote {path}")
        raise typer.Exit(result.exit_code)
