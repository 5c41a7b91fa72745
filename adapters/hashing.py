"""Content hashes of model folders and data, recorded in manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path

# Files that describe a folder rather than define the model: excluded from its hash.
EXCLUDED = {"base_manifest.yaml", "manifest.yaml", "README.md"}


def folder_hash(folder: Path, exclude: set[str] = EXCLUDED) -> str:
    """sha256 over the relative path and bytes of every file in `folder`, sorted."""
    digest = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in exclude)
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return "sha256:" + digest.hexdigest()


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
