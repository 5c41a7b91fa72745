"""Top-level commands that combine packages (`kidsart demo`, `kidsart loop-study`)."""

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

    from kidsart.loop_study import LoopStudyConfig

    fields = LoopStudyConfig.model_fields

    def option(name: str):
        return typer.Option(fields[name].default, help=fields[name].description)

    @app.command("loop-study")
    def loop_study(
        out: str = typer.Option(str(fields["out"].default), help=fields["out"].description),
        shift: str = option("shift"),
        district: int = option("district"),
        corrections: int = option("corrections"),
        heldout: int = option("heldout"),
        replay: int = option("replay"),
        config: str = option("config"),
        seed: int = option("seed"),
        profile: str = option("profile"),
    ) -> None:
        """The learning loop on known truth: a shifted district scored, 200 artworks corrected by a simulated
        teacher through the review API (queue order and random), adapters continued, both held-out sets evaluated."""
        options = {name: value for name, value in locals().items() if name in fields}
        from kidsart.loop_study import markdown, run_study

        typer.echo(markdown(run_study(LoopStudyConfig.model_validate(options))))
