"""`kidsart review serve RUN_DIR`: the review app for a district run (only typer is imported here)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    review = typer.Typer(help="Teachers review a district run's scores: the app, and its export.", no_args_is_help=True)
    app.add_typer(review, name="review")

    @review.command("serve")
    def serve_review(
        run_dir: Path = typer.Argument(..., help="The district run folder (`kidsart score-district --out`)."),
        port: int = typer.Option(8300, "--port", min=1, max=65535, help="Port to listen on."),
        host: str = typer.Option(
            "127.0.0.1", "--host", help="Address to listen on; another than loopback needs reviewer keys."
        ),
        keys_file: Path | None = typer.Option(
            None, "--keys-file", help="File of `name:key` lines (with or instead of $KIDSART_REVIEW_KEYS)."
        ),
    ) -> None:
        """Serve the review app: the queue (most unsure first), artwork pages, the JSON API; saves in
        RUN_DIR/review.sqlite."""
        import logging

        import uvicorn

        from adapters.errors import ConfigError
        from serve.keys import is_loopback
        from serve.review.app import build_review_app
        from serve.review.keys import ReviewerKeys
        from serve.review.run import ReviewRun
        from serve.review.service import ReviewService
        from serve.review.store import ReviewStore

        keys = ReviewerKeys.load(keys_file)
        if not keys and not is_loopback(host):
            raise ConfigError(
                f"no reviewer keys: the review app listens on loopback only, not {host} "
                "(set KIDSART_REVIEW_KEYS=name:key,... or --keys-file)"
            )
        if not keys:
            logging.getLogger(__name__).warning(
                "no reviewer keys: the review app listens on %s only and every save is made by 'local'", host
            )
        service = ReviewService(ReviewRun(run_dir), ReviewStore(run_dir))
        typer.echo(f"review app for {run_dir}: http://{host}:{port}/ ({len(keys)} reviewer keys)", err=True)
        uvicorn.run(build_review_app(service, keys), host=host, port=port, log_level="warning")

    @review.command("export")
    def export_review(
        run_dir: Path = typer.Argument(..., help="The district run folder with its review.sqlite."),
        fmt: str = typer.Option(..., "--format", help="training-csv, label-studio or jsonl."),
        out: Path = typer.Option(..., "--out", help="The file to write (images go beside it)."),
    ) -> None:
        """Export the teachers' reviews: a training CSV `kidsart train` reads, Label Studio tasks, or the full
        history as JSONL."""
        from serve.review.export import export_reviews

        for path in export_reviews(run_dir, fmt, out):
            typer.echo(f"wrote {path}")
