"""Where files are: data shipped inside the package, and the one data directory for everything else.

- Shipped data (rubrics, prompt formats, profiles, deployment sets, the tiny base and
  its committed adapters, training configs) lives inside the installed packages, so a
  wheel installed anywhere finds it. A profile path starting with `adapters/` names
  such a file (`adapters/bases/tiny` is the tiny base inside the `adapters` package).
- Everything made or fetched by a user (the bench base, retrained or imported adapters,
  `artifacts/...` in the profiles) resolves under the data directory `KIDSART_HOME`;
  unset, that is the current working directory (so in a checkout, where `make` runs,
  it is the checkout). Outputs such as `runs/...` are command options, relative to the
  current directory as any command's.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_PREFIX = "adapters"  # a relative profile path starting here is shipped data
HOME_ENV = "KIDSART_HOME"


def data_home() -> Path:
    """The data directory: $KIDSART_HOME, else the current working directory."""
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser() if value else Path.cwd()


def resolve_path(path: str | Path) -> Path:
    """A path from a profile: absolute as it is; `adapters/...` inside the installed package; else under data_home()."""
    path = Path(path)
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == SHIPPED_PREFIX:
        return PACKAGE_DIR.joinpath(*path.parts[1:])
    return data_home() / path
