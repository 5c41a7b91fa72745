"""The durable record of a district run: an append-only, fsync'd JSONL journal.

One line per finished input: `{"key", "sha256", "status": "ok"|"error", "scores" |
"error_type"/"error", ...}`. A result is written, flushed and fsync'd before the
run counts it, so after a SIGKILL at any moment the journal holds every counted
result and at most one torn last line, which `open` cuts off. An input is done
when the journal has a record with its key and its current content hash (a file
replaced between runs is scored again; the newest record wins). A lock file keeps
two runs from writing into the same output folder at once.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from adapters.errors import KidsArtError

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.jsonl"
LOCK_NAME = ".district.lock"


class JournalError(KidsArtError):
    """The journal or output folder cannot be used (locked by another run, or unexpected content)."""

    kind = "journal_error"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def parse_journal(data: bytes, path: Path) -> tuple[dict[str, dict], int]:
    """(key -> its newest record, the end of the last whole line) of a journal's bytes; unreadable lines skipped."""
    records: dict[str, dict] = {}
    good_end = position = bad = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline == -1:  # torn last line: written partly before a kill
            break
        line = data[position:newline]
        position = newline + 1
        if line.strip():
            try:
                record = json.loads(line)
                records[record["key"]] = record
            except (ValueError, KeyError, TypeError):
                bad += 1
                log.warning("journal %s: skipping an unreadable line at byte %d", path, position)
        good_end = position
    if bad:
        log.warning("journal %s: %d unreadable lines skipped", path, bad)
    return records, good_end


def read_journal(out_dir: Path) -> dict[str, dict]:
    """The records of a run's journal, read only (no lock, nothing repaired): for readers beside or after a run."""
    path = Path(out_dir) / JOURNAL_NAME
    return parse_journal(path.read_bytes(), path)[0] if path.exists() else {}


class Journal:
    """Append-only JSONL journal in an output folder; use as a context manager."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / JOURNAL_NAME
        self.records: dict[str, dict] = {}
        self._by_content: dict[tuple[str, str], dict] = {}
        self._handle = None
        self._lock = None

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> Journal:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._lock = (self.out_dir / LOCK_NAME).open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            self._lock = None
            raise JournalError(f"another run is writing into {self.out_dir} (lock {LOCK_NAME} is held)") from exc
        created = not self.path.exists()
        self.records = self._load_and_repair()
        for record in self.records.values():
            self._index(record)
        self._handle = self.path.open("ab")
        if created:
            os.fsync(self._handle.fileno())
            _fsync_dir(self.out_dir)
        return self

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------
    def _load_and_repair(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        data = self.path.read_bytes()
        records, good_end = parse_journal(data, self.path)
        if good_end < len(data):
            log.warning("journal %s: cutting off a torn last line (%d bytes)", self.path, len(data) - good_end)
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())
        return records

    def is_done(self, key: str, sha256: str) -> bool:
        record = self.records.get(key)
        return record is not None and record.get("sha256", "") == sha256

    def find_content(self, sha256: str, description: str) -> dict | None:
        """A finished record for the same content and description (to reuse for a duplicate)."""
        if not sha256:
            return None
        return self._by_content.get((sha256, description))

    def _index(self, record: dict) -> None:
        # a local error is about the input, not its content (an OpenAI batch line asking for other dimensions
        # than the run): never given to another input with the same content
        if record.get("sha256") and not record.get("reused_from") and record.get("source") != "local":
            self._by_content.setdefault((record["sha256"], record.get("description", "")), record)

    # -- writing -------------------------------------------------------------------
    def append(self, records: Iterable[dict]) -> None:
        """Write records as one block, flush and fsync; only then are they in `self.records`."""
        if self._handle is None:
            raise JournalError("the journal is not open")
        records = list(records)
        if not records:
            return
        block = b"".join(
            json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
            for record in records
        )
        self._handle.write(block)
        self._handle.flush()
        os.fsync(self._handle.fileno())
        for record in records:
            self.records[record["key"]] = record
            self._index(record)
