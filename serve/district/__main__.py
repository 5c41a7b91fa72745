"""`python -m serve.district score-district ...`: the district command without the full `kidsart` CLI."""
from __future__ import annotations

import sys

import typer

from serve.district.cli import register

app = typer.Typer(name="district", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def _root() -> None:
    """District batch scoring."""


register(app)


def main() -> None:
    from adapters.errors import KidsArtError
    from adapters.logs import setup_logging

    setup_logging()
    try:
        app()
    except KidsArtError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        sys.exit(2)


if __name__ == "__main__":
    main()
