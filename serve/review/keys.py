"""Who may review: named reviewer keys, kept as digests like the router's API keys.

Keys come from `KIDSART_REVIEW_KEYS="name:key,name:key"` and/or a file of `name:key` lines
(`--keys-file`; `#` starts a comment). Each key is at least `MIN_KEY_LENGTH` characters and
names one reviewer; only SHA-256 digests are kept in memory after loading. A key presented
(as a bearer token, or in the login form) is compared in constant time with every digest.
Without keys the app listens on loopback only and says so (`serve.review.app`).
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from serve.keys import MIN_KEY_LENGTH, KeyConfigError, bearer_token, digest, read_key_lines

REVIEW_KEYS_ENV = "KIDSART_REVIEW_KEYS"


def _parse(entries: list[str], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for number, entry in enumerate(entries, start=1):
        name, sep, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not sep or not name or not key:
            raise KeyConfigError(f"{where} entry {number} is not `name:key`")
        if len(key) < MIN_KEY_LENGTH:
            raise KeyConfigError(f"{where}: the key of reviewer {name!r} is shorter than {MIN_KEY_LENGTH} characters")
        found[digest(key)] = name
    return found


class ReviewerKeys:
    """Key digest -> reviewer name."""

    def __init__(self, names_by_digest: dict[str, str]):
        self._names = dict(names_by_digest)

    @classmethod
    def load(cls, keys_file: str | Path | None = None, environ: dict | None = None) -> ReviewerKeys:
        environ = os.environ if environ is None else environ
        names = _parse([e for e in environ.get(REVIEW_KEYS_ENV, "").split(",") if e.strip()], REVIEW_KEYS_ENV)
        if keys_file is not None:
            names.update(
                _parse(read_key_lines(keys_file, "--keys-file", "`name:key` line"), f"--keys-file {keys_file}")
            )
        return cls(names)

    def __bool__(self) -> bool:
        return bool(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def reviewer(self, key: str | None) -> str | None:
        """The reviewer whose key this is, or None (constant time per digest)."""
        if not key:
            return None
        presented = digest(key).encode("ascii")
        found = None
        for expected, name in self._names.items():
            if hmac.compare_digest(presented, expected.encode("ascii")):
                found = name
        return found

    def from_header(self, authorization: str | None) -> str | None:
        return self.reviewer(bearer_token(authorization))
