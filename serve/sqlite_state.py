"""Durable state in SQLite (WAL mode), one transaction per change: the Batch API's files and batches and the
review app's corrections both live in such a database.

WAL mode lets readers go on while one writer commits; `BEGIN IMMEDIATE` takes the write
lock at the start of a change, so two writers never interleave a read-check-write; a
process killed at any moment leaves the previous or the next state, never half of one.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 30.0  # how long a writer waits for another's transaction before failing


class SqliteState:
    """A SQLite database in WAL mode with `schema` applied, and its transactions."""

    def __init__(self, db_path: Path, schema: str):
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        setup = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S)
        try:
            setup.execute("PRAGMA journal_mode=WAL")  # outside a transaction, as SQLite requires
            setup.executescript(schema)
        finally:
            setup.close()

    @contextmanager
    def transaction(self):
        """One transaction: committed on leaving, rolled back on an error."""
        connection = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()
