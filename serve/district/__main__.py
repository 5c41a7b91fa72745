"""`python -m serve.district score-district ...`: the district command without the full `kidsart` CLI."""

from __future__ import annotations

import typer

from adapters.cli import run
from serve.district.cli import register

app = typer.Typer(name="district", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.callback()
def _root() -> None:
    """District batch scoring."""


register(app)


def main() -> None:
    run(app)


if __name__ == "__main__":
    main()
