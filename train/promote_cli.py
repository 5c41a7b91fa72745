"""`kidsart adapters status|promote|rollback`: the served adapter set of a running router, changed without a
restart (an admin key: --admin-key or $KIDSART_ADMIN_KEY). Only typer and the standard library at import."""

from __future__ import annotations

import typer

ADMIN_KEY_HELP = "An admin key of the router (default: $KIDSART_ADMIN_KEY)."


def register(app: typer.Typer) -> None:
    adapters = typer.Typer(
        help="The adapter set a running router serves: status, promote (gated on a held-out set), rollback.",
        no_args_is_help=True,
    )
    app.add_typer(adapters, name="adapters")

    def client(url: str, admin_key: str | None):
        import os

        from serve.client import ADMIN_KEY_ENV, ScoringClient

        return ScoringClient(url, api_key=admin_key or os.environ.get(ADMIN_KEY_ENV) or "")

    def show(status) -> None:
        typer.echo(f"generation {status.generation}: serving {status.set.name} ({status.set.source})")
        for dim, label in status.set.adapters.items():
            typer.echo(f"  {dim:22s} {label}")

    @adapters.command("status")
    def status_command(
        url: str = typer.Option(..., help="The router's base URL."),
        admin_key: str | None = typer.Option(None, "--admin-key", help=ADMIN_KEY_HELP, show_default=False),
    ) -> None:
        """What the router serves now, and the changes before."""
        with client(url, admin_key) as api:
            status = api.adapter_sets()
        show(status)
        for change in status.history:
            typer.echo(f"  [{change.generation}] {change.action} -> {change.set} by {change.by}")

    @adapters.command("promote")
    def promote_command(
        new: str = typer.Argument(..., help="Deployment-set YAML to serve (a path the router's nodes read)."),
        url: str = typer.Option(..., help="The router's base URL."),
        holdout: str = typer.Option(..., help="Held-out labels CSV both sets are scored on."),
        holdout_images: str = typer.Option(..., help="Folder of the images --holdout names."),
        profile: str = typer.Option("tiny", help="Profile whose base scores both sets here (the router's)."),
        current: str | None = typer.Option(
            None, help="The served set's YAML, when the path the router reports is not readable here."
        ),
        n_boot: int = typer.Option(1000, min=100, help="Bootstrap resamples of the paired difference."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        report: str = typer.Option("", help="Also write the gate's figures as JSON here."),
        admin_key: str | None = typer.Option(None, "--admin-key", help=ADMIN_KEY_HELP, show_default=False),
    ) -> None:
        """Evaluate NEW against the served set on a held-out set; refuse it (exit 2) when its mean SRCC is lower
        beyond the paired bootstrap interval, else serve it without a restart."""
        from pathlib import Path

        from adapters.profiles import load_profile
        from train.promote import gate_lines, run_gate

        with client(url, admin_key) as api:
            served = api.adapter_sets()  # the admin key is checked before any scoring
            result = run_gate(
                load_profile(profile),
                Path(current or served.set.source),
                Path(new),
                Path(holdout),
                Path(holdout_images),
                n_boot=n_boot,
                seed=seed,
            )
            for line in gate_lines(result):
                typer.echo(line)
            if report:
                Path(report).write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
            if not result.accepted:
                raise typer.Exit(2)
            show(api.promote(str(Path(new).resolve())))

    @adapters.command("rollback")
    def rollback_command(
        url: str = typer.Option(..., help="The router's base URL."),
        admin_key: str | None = typer.Option(None, "--admin-key", help=ADMIN_KEY_HELP, show_default=False),
    ) -> None:
        """Serve the set served before the last promotion, without a restart."""
        with client(url, admin_key) as api:
            show(api.rollback())
