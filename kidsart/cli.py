"""The `kidsart` command: one entry point that dispatches to adapters/, train/, serve/, loadtest/.

Each package contributes its subcommands through a light `cli` module (typer and
the standard library only at import time); heavy imports (torch, vLLM, Ray) stay
inside the command that needs them, so `kidsart --help` is instant.
"""

from __future__ import annotations

import typer

from adapters import cli as adapters_cli
from kidsart import commands as kidsart_commands
from loadtest import cli as loadtest_cli
from serve import cli as serve_cli
from train import cli as train_cli

app = typer.Typer(
    name="kidsart",
    help="Score children's artworks on art-education rubrics (KidsArtBench): build, train, serve, score, benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (adapters_cli, train_cli, serve_cli, loadtest_cli, kidsart_commands):
    module.register(app)


def main() -> None:
    adapters_cli.run(app)


if __name__ == "__main__":
    main()
