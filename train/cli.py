"""`kidsart` subcommands of the training side."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("init-adapters")
    def init_adapters(
        profile: str = typer.Option("tiny", help="Profile whose base the adapters are for."),
        out: str = typer.Option(..., help="Folder to write one adapter per dimension into."),
        rubric: str = typer.Option("kidsartbench", help="Rubric name or path."),
        seed: int = typer.Option(0, help="Seed."),
        deployment: str = typer.Option("", help="Also write a deployment-set YAML here."),
    ) -> None:
        """Write untrained but distinct LoRA adapters (seeded), e.g. as baselines."""
        from pathlib import Path

        from adapters.manifest import read_base_ref, write_deployment
        from adapters.profiles import load_profile
        from adapters.rubric import load_rubric
        from train.init_adapters import make_untrained_adapters

        loaded = load_profile(profile)
        rub = load_rubric(rubric)
        dirs = make_untrained_adapters(loaded.base.resolved_path, rub, Path(out), seed=seed)
        if deployment:
            write_deployment(
                Path(deployment), name=Path(deployment).stem, rubric=rub.name,
                base=read_base_ref(loaded.base.resolved_path), adapter_dirs=dirs,
            )
