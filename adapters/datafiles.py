"""Data files (rubrics, prompt formats, profiles, manifests, training configs): resolve, read and validate YAML.

A name resolves to `<folder>/<name>.yaml`; a path ending in .yaml/.yml is taken as
it is. Loads are cached per (path, mtime, size), so an edited file is re-read.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from adapters.errors import ConfigError


def data_file_path(name_or_path: str | Path, folder: Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return folder / f"{name_or_path}.yaml"


def shipped_names(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml"))


class StrictModel(BaseModel):
    """Every config and data-file model: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


def read_yaml(path: Path, what: str) -> Any:
    """The YAML document in `path` (an empty file is {}); ConfigError naming `what` and the file otherwise."""
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
    return {} if data is None else data


def parse_model(model: type[BaseModel], data: Any, what: str, path: Path | str):
    """`data` validated as `model`; ConfigError naming `what` and the file otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{what} {path} is invalid: {exc}") from exc


@lru_cache(maxsize=64)
def _load_cached(model: type[BaseModel], what: str, path: Path, _mtime_ns: int, _size: int) -> BaseModel:
    return parse_model(model, read_yaml(path, what), what, path)


def load_data_file(model: type[BaseModel], what: str, name_or_path: str | Path, folder: Path) -> BaseModel:
    """The validated `model` from a shipped name or a path; ConfigError naming the file otherwise."""
    path = data_file_path(name_or_path, folder).resolve()
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist (shipped: {shipped_names(folder)})")
    stat = path.stat()
    return _load_cached(model, what, path, stat.st_mtime_ns, stat.st_size)


def atomic_write(path: Path, write) -> Path:
    """Write `path` whole or not at all: `write(tmp_path)` fills a sibling temporary file, which is fsync'd and
    renamed over `path` (a reader, or a run resumed after a crash, never sees half a file)."""
    import os

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path
