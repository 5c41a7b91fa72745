"""Shipped data files (rubrics, prompt formats): resolve a name or path, load and validate YAML once.

A name resolves to `<folder>/<name>.yaml`; a path ending in .yaml/.yml is taken as
it is. Loads are cached per (path, mtime, size), so an edited file is re-read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from adapters.errors import ConfigError


def data_file_path(name_or_path: str | Path, folder: Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return folder / f"{name_or_path}.yaml"


def shipped_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


@lru_cache(maxsize=64)
def _load_cached(model: type[BaseModel], what: str, path: Path, _mtime_ns: int, _size: int) -> BaseModel:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{what} {path} is invalid: {exc}") from exc


def load_data_file(model: type[BaseModel], what: str, name_or_path: str | Path, folder: Path) -> BaseModel:
    """The validated `model` from a shipped name or a path; ConfigError naming the file otherwise."""
    path = data_file_path(name_or_path, folder).resolve()
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist (shipped: {shipped_names(folder)})")
    stat = path.stat()
    return _load_cached(model, what, path, stat.st_mtime_ns, stat.st_size)
