"""Discover a district's submissions: a folder tree, a CSV manifest or an OpenAI batch file -> one `InputItem` each.

Folder trees: any depth; the folder levels below the root become columns, named by
`levels` (default school, grade, class; deeper levels are joined into `folder`).
Image files (png, jpg/jpeg, webp, bmp, tif/tiff, gif) are inputs, whatever the case
of their extension; hidden files and folders (name starting with '.') are skipped;
a symbolic link is followed only if it resolves inside the root (and each real
folder is walked once, so link loops end). Other files are listed as skipped.

CSV manifests: a `path` column (relative to the CSV's folder, or absolute) plus
optional `student_id`, `school`, `grade`, `class`, `description`. A missing file is
an input with a local error, so it becomes an error row rather than vanishing.

OpenAI batch files (`.jsonl`, serve.district.openai_batch): one input per request line, in
file order, keyed by its custom_id; its image is the line's decoded data URL, read again
from the file by the line's byte offset (`read_input_bytes` reads any input's image).

Every input has a stable `key` (its relative path; a CSV listing one path twice gets
`#2`, `#3`...; a batch line's custom_id) and the sha256 of its content. Inputs with
identical content are reported through `duplicate_of` (the key of the first one) but keep
their own row.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import InputError
from adapters.limits import DEFAULT_MAX_IMAGE_BYTES
from serve.batch.lines import LineError
from serve.district.openai_batch import BatchLine, batch_endpoint, line_image, read_batch_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
DEFAULT_LEVELS = ("school", "grade", "class")
CSV_COLUMNS = ("path", "student_id", "school", "grade", "class", "description")
INPUT_FORMATS = ("auto", "folder", "csv", "openai-batch")


class DistrictInputError(InputError):
    """The district input (folder or CSV manifest) cannot be read."""

    kind = "invalid_district_input"


class InputReadError(DistrictInputError):
    """An input's image cannot be had; `kind` is its error row's type (missing_file, invalid_image, ...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class InputItem:
    """One submission: where it is, who and where it comes from, and what it contains."""

    key: str
    path: str
    student_id: str = ""
    school: str = ""
    grade: str = ""
    class_name: str = ""
    folder: str = ""
    description: str = ""
    size: int = -1
    sha256: str = ""
    duplicate_of: str = ""
    local_error_type: str = ""
    local_error: str = ""
    batch: BatchLine | None = None  # a line of an OpenAI batch file (`path`): where it is, what it asks; None: a file


@dataclass
class Discovery:
    """The result of scanning an input: the items plus what was skipped and why; for an OpenAI batch file also its
    endpoint and the lines refused before scoring (also in `skipped`)."""

    items: list[InputItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""
    endpoint: str | None = None
    refused: list[LineError] = field(default_factory=list)


def discover(
    source: str | Path,
    *,
    levels: tuple[str, ...] = DEFAULT_LEVELS,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    hash_workers: int = 4,
    input_format: str = "auto",
) -> Discovery:
    """Scan a folder tree, read a CSV manifest or an OpenAI batch file; hash every input; mark duplicates."""
    source = Path(source)
    kind = input_kind(source, input_format)
    endpoint, refused = None, []
    if kind == "folder":
        items, skipped = _scan_tree(source, levels)
    elif kind == "csv":
        items, skipped = _read_manifest(source)
    else:
        endpoint, items, refused = _read_batch(source)
        skipped = [(e.custom_id or f"{source.name}:{e.line}", e.message) for e in refused]
    _hash_all(items, max_bytes, hash_workers)
    _mark_duplicates(items)
    log.info("discovered %d inputs in %s (%d skipped)", len(items), source, len(skipped))
    return Discovery(items=items, skipped=skipped, source=str(source.resolve()), endpoint=endpoint, refused=refused)


def input_kind(source: Path, input_format: str = "auto") -> str:
    """What `source` is read as: folder, csv or openai-batch (auto: a folder, a .csv file or a .jsonl file)."""
    source = Path(source)
    if input_format not in INPUT_FORMATS:
        raise DistrictInputError(f"unknown input format {input_format!r}; use one of {list(INPUT_FORMATS)}")
    if not source.exists():
        raise DistrictInputError(f"district input {source} does not exist")
    if input_format == "auto":
        suffix = source.suffix.lower()
        if source.is_dir():
            return "folder"
        if source.is_file() and suffix in (".csv", ".jsonl"):
            return "csv" if suffix == ".csv" else "openai-batch"
        raise DistrictInputError(
            f"district input {source} must be a folder, a .csv manifest or an OpenAI batch .jsonl file "
            "(or say which with --input-format)"
        )
    if (input_format == "folder") != source.is_dir():
        wanted = "a folder" if input_format == "folder" else "a file"
        raise DistrictInputError(f"--input-format {input_format} needs {wanted}; {source} is not")
    return input_format


def _read_batch(path: Path) -> tuple[str, list[InputItem], list[LineError]]:
    """(endpoint, one item per request line in file order, the lines refused) of an OpenAI batch file."""
    try:
        endpoint = batch_endpoint(path)
        entries, refused = read_batch_file(path, endpoint) if endpoint else ([], [])
    except OSError as exc:
        raise DistrictInputError(f"OpenAI batch file {path} cannot be read: {exc.strerror or exc}") from exc
    if endpoint is None:
        raise DistrictInputError(
            f"no line of {path} is an OpenAI batch request (custom_id, method, url /v1/score or "
            "/v1/chat/completions, body)"
        )
    absolute = str(path.absolute())
    items = [
        InputItem(
            key=entry.custom_id,
            path=absolute,
            student_id=entry.custom_id,
            description=entry.description,
            batch=entry.line,
            local_error_type=entry.error.kind if entry.error else "",
            local_error=str(entry.error) if entry.error else "",
        )
        for entry in entries
    ]
    return endpoint, items, refused


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _scan_tree(root: Path, levels: tuple[str, ...]) -> tuple[list[InputItem], list[tuple[str, str]]]:
    root_real = Path(os.path.realpath(root))
    items: list[InputItem] = []
    skipped: list[tuple[str, str]] = []
    visited: set[str] = set()

    def inside(real: str) -> bool:
        return real == str(root_real) or real.startswith(str(root_real) + os.sep)

    def walk(folder: Path, rel_parts: tuple[str, ...]) -> None:
        real = os.path.realpath(folder)
        if real in visited:
            skipped.append(("/".join(rel_parts), "folder already visited (link loop or second link)"))
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append(("/".join(rel_parts) or ".", f"folder cannot be read: {exc.strerror or exc}"))
            return
        for entry in entries:
            rel = "/".join((*rel_parts, entry.name))
            if _is_hidden(entry.name):
                skipped.append((rel, "hidden"))
                continue
            target = entry.path
            if entry.is_symlink():
                real_target = os.path.realpath(entry.path)
                if not inside(real_target):
                    skipped.append((rel, "symbolic link leading outside the root"))
                    continue
                if not os.path.exists(real_target):
                    skipped.append((rel, "broken symbolic link"))
                    continue
                target = real_target
            if os.path.isdir(target):
                walk(Path(entry.path), (*rel_parts, entry.name))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                items.append(_item_from_tree(rel, entry.path, rel_parts, levels))
            else:
                skipped.append((rel, "not an image file type"))

    walk(root, ())
    items.sort(key=lambda item: item.key)
    return items, skipped


def _item_from_tree(rel: str, path: str, folders: tuple[str, ...], levels: tuple[str, ...]) -> InputItem:
    named = dict(zip(levels, folders, strict=False))
    extra = folders[len(levels) :]
    return InputItem(
        key=rel,
        path=str(Path(path).absolute()),
        student_id=Path(rel).stem,
        school=named.get("school", ""),
        grade=named.get("grade", ""),
        class_name=named.get("class", ""),
        folder="/".join(extra),
    )


def _read_manifest(csv_path: Path) -> tuple[list[InputItem], list[tuple[str, str]]]:
    base = csv_path.parent
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "path" not in [f.strip() for f in reader.fieldnames]:
                raise DistrictInputError(f"manifest {csv_path} needs a 'path' column (has {reader.fieldnames})")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as exc:
        raise DistrictInputError(f"manifest {csv_path} is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:
        raise DistrictInputError(f"manifest {csv_path} is not valid CSV: {exc}") from exc
    unknown = sorted(set(rows[0]) - set(CSV_COLUMNS)) if rows else []
    if unknown:
        log.warning("manifest %s: ignoring columns %s", csv_path, unknown)
    items: list[InputItem] = []
    skipped: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        raw = row.get("path", "")
        if not raw:
            skipped.append((f"{csv_path.name}:{number}", "empty path"))
            continue
        rel = Path(raw).as_posix()
        seen[rel] = seen.get(rel, 0) + 1
        key = rel if seen[rel] == 1 else f"{rel}#{seen[rel]}"
        path = Path(raw) if Path(raw).is_absolute() else base / raw
        items.append(
            InputItem(
                key=key,
                path=str(path.absolute()),
                student_id=row.get("student_id") or Path(rel).stem,
                school=row.get("school", ""),
                grade=row.get("grade", ""),
                class_name=row.get("class", ""),
                description=row.get("description", ""),
            )
        )
    return items, skipped


def read_input_bytes(source: InputItem | str, offset: int | None = None, *, key: str = "") -> bytes:
    """The image bytes of an input: a file's bytes, or the decoded image of its batch file's line (read again at
    byte `offset`). `source` is the item, or its `path` (with its line's `offset`, None for a file, and its `key` for
    messages). Raises InputReadError, whose `kind` is the error row's type."""
    if isinstance(source, InputItem):
        path, offset, key = source.path, source.batch.offset if source.batch else None, source.key
    else:
        path, key = source, key or str(source)
    try:
        return Path(path).read_bytes() if offset is None else line_image(Path(path), offset)
    except FileNotFoundError as exc:
        what = f"file {key}" if offset is None else f"the batch file {path} of line {key!r}"
        raise InputReadError("missing_file", f"{what} does not exist") from exc
    except OSError as exc:
        what = f"file {key}" if offset is None else f"the batch file {path} of line {key!r}"
        raise InputReadError("unreadable_file", f"{what} cannot be read: {exc.strerror or exc}") from exc
    except InputError as exc:  # the line's image: no data URL, bad base64, the line changed
        raise InputReadError(exc.kind, str(exc)) from exc


def _hash_one(item: InputItem, max_bytes: int) -> None:
    """Size and sha256 of the input's image, or its local error. A file above `max_bytes` is hashed in chunks,
    never read whole (it is never sent)."""
    if item.local_error_type:  # a batch line already refused (no image to read)
        return
    if item.batch is None and not _check_file(item, max_bytes):
        return
    try:
        data = read_input_bytes(item)
    except InputReadError as exc:
        item.local_error_type, item.local_error = exc.kind, str(exc)
        return
    item.size, item.sha256 = len(data), hashlib.sha256(data).hexdigest()
    what = f"file {item.key}" if item.batch is None else f"the image of line {item.key!r}"
    if not data:
        item.local_error_type, item.local_error = "invalid_image", f"{what} is empty (0 bytes)"
    elif item.size > max_bytes:
        item.local_error_type, item.local_error = (
            "image_too_large",
            f"{what} is {item.size} bytes; the limit is {max_bytes}",
        )


def _check_file(item: InputItem, max_bytes: int) -> bool:
    """Whether the file is a regular file within `max_bytes` (to be read); else its local error is set (and a file
    too large is hashed in chunks)."""
    path = Path(item.path)
    try:
        item.size = path.stat().st_size
    except FileNotFoundError:
        item.local_error_type, item.local_error = "missing_file", f"file {item.key} does not exist"
        return False
    except OSError as exc:
        item.local_error_type, item.local_error = (
            "unreadable_file",
            f"file {item.key} cannot be read: {exc.strerror or exc}",
        )
        return False
    if not path.is_file():
        item.local_error_type, item.local_error = "unreadable_file", f"{item.key} is not a regular file"
        return False
    if item.size <= max_bytes:
        return True
    item.local_error_type, item.local_error = (
        "image_too_large",
        f"file {item.key} is {item.size} bytes; the limit is {max_bytes}",
    )
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        item.local_error_type, item.local_error = (
            "unreadable_file",
            f"file {item.key} cannot be read: {exc.strerror or exc}",
        )
        return False
    item.sha256 = digest.hexdigest()
    return False


def _hash_all(items: list[InputItem], max_bytes: int, workers: int) -> None:
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda item: _hash_one(item, max_bytes), items))


def _mark_duplicates(items: list[InputItem]) -> None:
    first: dict[str, str] = {}
    for item in items:
        if not item.sha256 or item.size == 0:
            continue
        if item.sha256 in first:
            item.duplicate_of = first[item.sha256]
        else:
            first[item.sha256] = item.key
