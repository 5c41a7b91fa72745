"""Files and batch state of the OpenAI Batch API, durable under `KIDSART_HOME/batches` (SQLite, WAL mode).

Layout: `batches.sqlite` (the state), `files/<file id>` (uploaded inputs, and the output and
error files batches write), `runs/<batch id>/` (each batch's district-job journal). A file or
batch belongs to the key that created it (its digest, `owner`); asked for by another key it
does not exist. The state is the API's own objects (`serve.protocol.FileObject`,
`BatchObject`) stored as JSON beside the owner and an insertion sequence (for newest-first
pages); every change is one transaction (`serve.sqlite_state`).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

from serve.protocol import BatchCreateRequest, BatchList, BatchObject, FileObject
from serve.sqlite_state import SqliteState

UNFINISHED = ("validating", "in_progress", "finalizing", "cancelling")
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, seq INTEGER NOT NULL, object TEXT NOT NULL, deleted INTEGER DEFAULT 0
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL, object TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, seq);
"""


def now() -> int:
    return int(time.time())


class BatchStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.files_dir = self.root / "files"
        self.runs_dir = self.root / "runs"
        for folder in (self.files_dir, self.runs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.state = SqliteState(self.root / "batches.sqlite", SCHEMA)
        self.db_path = self.state.db_path
        self._db = self.state.transaction

    @staticmethod
    def _next_seq(db, table: str) -> int:
        return db.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}").fetchone()[0]

    # ---- files ---------------------------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def upload_path(self, upload_id: str) -> Path:
        """Where the upload `upload_id` is written while it arrives (in the files folder: one rename to keep it)."""
        return self.files_dir / f".up-{upload_id}"

    def new_upload_path(self) -> Path:
        """A temporary path an upload streams into (then `add_file` takes it in, or it is removed)."""
        return self.files_dir / f".upload-{uuid.uuid4().hex}"

    def add_file(self, owner: str, filename: str, purpose: str, written: Path, retention_s: int | None) -> FileObject:
        """Take in a fully written file (fsync'd, renamed into place) and record it."""
        file_id = f"file-{uuid.uuid4().hex}"
        with open(written, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(written, self.file_path(file_id))
        created = now()
        obj = FileObject(
            id=file_id,
            bytes=self.file_path(file_id).stat().st_size,
            created_at=created,
            expires_at=created + retention_s if retention_s else None,
            filename=filename,
            purpose=purpose,
        )
        with self._db() as db:
            db.execute(
                "INSERT INTO files (id, owner, seq, object) VALUES (?, ?, ?, ?)",
                (file_id, owner, self._next_seq(db, "files"), obj.model_dump_json()),
            )
        return obj

    def get_file(self, owner: str, file_id: str) -> FileObject | None:
        """The file, or None when it does not exist, was deleted, or belongs to another key."""
        with self._db() as db:
            row = db.execute(
                "SELECT object FROM files WHERE id = ? AND owner = ? AND deleted = 0", (file_id, owner)
            ).fetchone()
        return FileObject.model_validate_json(row[0]) if row else None

    def delete_file(self, owner: str, file_id: str) -> bool:
        with self._db() as db:
            changed = db.execute(
                "UPDATE files SET deleted = 1 WHERE id = ? AND owner = ? AND deleted = 0", (file_id, owner)
            ).rowcount
        if changed:
            self.file_path(file_id).unlink(missing_ok=True)
        return bool(changed)

    def expired_files(self, at: int | None = None) -> list[tuple[str, str]]:
        """(owner, id) of the files past their `expires_at` (retention), for deletion."""
        at = now() if at is None else at
        with self._db() as db:
            rows = db.execute("SELECT id, owner, object FROM files WHERE deleted = 0").fetchall()
        return [
            (owner, fid) for fid, owner, obj in rows if (FileObject.model_validate_json(obj).expires_at or at + 1) <= at
        ]

    # ---- batches -------------------------------------------------------------------------------------------------

    def create_batch(self, owner: str, request: BatchCreateRequest) -> BatchObject:
        created = now()
        batch = BatchObject(
            id=f"batch_{uuid.uuid4().hex}",
            endpoint=request.endpoint,
            input_file_id=request.input_file_id,
            completion_window=request.completion_window,
            status="validating",
            created_at=created,
            expires_at=created + 24 * 3600,
            metadata=request.metadata,
        )
        with self._db() as db:
            db.execute(
                "INSERT INTO batches (id, owner, seq, status, object) VALUES (?, ?, ?, ?, ?)",
                (batch.id, owner, self._next_seq(db, "batches"), batch.status, batch.model_dump_json()),
            )
        return batch

    def get_batch(self, owner: str | None, batch_id: str) -> BatchObject | None:
        """The batch (any owner's when `owner` is None: the runner), or None."""
        with self._db() as db:
            row = db.execute("SELECT owner, object FROM batches WHERE id = ?", (batch_id,)).fetchone()
        if row is None or (owner is not None and row[0] != owner):
            return None
        return BatchObject.model_validate_json(row[1])

    def owner_of(self, batch_id: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT owner FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return row[0] if row else None

    def update_batch(self, batch_id: str, **changes) -> BatchObject:
        """Apply `changes` (BatchObject fields) in one transaction; the updated batch."""
        with self._db() as db:
            row = db.execute("SELECT object FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if row is None:
                raise KeyError(batch_id)
            batch = BatchObject.model_validate({**json.loads(row[0]), **changes})
            db.execute(
                "UPDATE batches SET status = ?, object = ? WHERE id = ?",
                (batch.status, batch.model_dump_json(), batch_id),
            )
        return batch

    def list_batches(self, owner: str, after: str | None = None, limit: int = 20) -> BatchList:
        with self._db() as db:
            start = None
            if after is not None:
                row = db.execute("SELECT seq FROM batches WHERE id = ? AND owner = ?", (after, owner)).fetchone()
                start = row[0] if row else None
            query = "SELECT object FROM batches WHERE owner = ?" + (" AND seq < ?" if start else "")
            args = (owner, start) if start else (owner,)
            rows = db.execute(query + " ORDER BY seq DESC LIMIT ?", (*args, limit + 1)).fetchall()
        data = [BatchObject.model_validate_json(r[0]) for r in rows[:limit]]
        return BatchList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=len(rows) > limit,
        )

    def open_batches(self, owner: str) -> int:
        with self._db() as db:
            marks = ",".join("?" * len(UNFINISHED))
            return db.execute(
                f"SELECT COUNT(*) FROM batches WHERE owner = ? AND status IN ({marks})",
                (owner, *UNFINISHED),
            ).fetchone()[0]

    def unfinished(self) -> list[BatchObject]:
        """Every batch not yet ended, oldest first: the runner resumes them after a restart."""
        with self._db() as db:
            marks = ",".join("?" * len(UNFINISHED))
            rows = db.execute(
                f"SELECT object FROM batches WHERE status IN ({marks}) ORDER BY seq",
                UNFINISHED,
            ).fetchall()
        return [BatchObject.model_validate_json(r[0]) for r in rows]

    def run_dir(self, batch_id: str) -> Path:
        return self.runs_dir / batch_id
