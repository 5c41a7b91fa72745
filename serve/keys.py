"""API keys: where the router's keys come from, how a presented key is checked, when serving without keys is refused.

- Keys come from `KIDSART_API_KEYS` (comma-separated) and/or a key file (`kidsart serve
  --api-key-file`, one key per line, `#` comments), never from a profile or any
  committed YAML. Each must be at least `MIN_KEY_LENGTH` characters.
- The router keeps only their SHA-256 digests and compares the digest of a presented
  `Authorization: Bearer <key>` with every one of them in constant time
  (`hmac.compare_digest`, no early exit), so neither timing nor logs reveal a key.
- Admin keys (`KIDSART_ADMIN_KEYS`, comma-separated) are a separate set, checked the same way: they
  change what is served (`/v1/admin/*`: promote, rollback) and cannot score; a scoring key on an
  admin route is refused with 403. A key in both sets is refused at start. Without admin keys the
  admin routes are open only on a router that has no keys at all (loopback).
- Safe by default (`check_exposure`): with no key the router may listen on a loopback
  address only (with a warning); on any other address it refuses to start unless told
  `--insecure-no-auth`.

Import-light (the standard library and `adapters.errors`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
from pathlib import Path

from adapters.errors import ConfigError

log = logging.getLogger(__name__)

API_KEYS_ENV = "KIDSART_API_KEYS"
ADMIN_KEYS_ENV = "KIDSART_ADMIN_KEYS"
MIN_KEY_LENGTH = 16


class KeyConfigError(ConfigError):
    """The keys given cannot be used (unreadable file, a key too short), or serving without keys is refused."""


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def bearer_token(header_value: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header value, or None."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def key_matches(header_value: str | None, digests: list[str]) -> bool:
    """Whether the header carries one of the keys whose SHA-256 hex digests are given (constant time per digest)."""
    token = bearer_token(header_value)
    if token is None or not digests:
        return False
    presented = digest(token).encode("ascii")
    matched = False
    for expected in digests:
        matched |= hmac.compare_digest(presented, expected.encode("ascii"))
    return matched


def read_key_lines(key_file: str | Path, option: str, what: str) -> list[str]:
    """The non-blank lines of a key file (`#` starts a comment); KeyConfigError naming `option` if it is unreadable
    or holds none."""
    path = Path(key_file).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise KeyConfigError(f"{option} {path}: cannot read it ({exc.strerror})") from exc
    found = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not found:
        raise KeyConfigError(f"{option} {path} holds no {what} (one per line; # starts a comment)")
    return found


def load_api_keys(key_file: str | Path | None = None, environ: dict | None = None) -> list[str]:
    """The router's keys from `KIDSART_API_KEYS` and the key file, de-duplicated, in order."""
    environ = os.environ if environ is None else environ
    keys = [k.strip() for k in environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    if key_file is not None:
        keys += read_key_lines(key_file, "--api-key-file", "key")
    return _checked(keys, "API")


def load_admin_keys(api_keys: list[str], environ: dict | None = None) -> list[str]:
    """The router's admin keys from `KIDSART_ADMIN_KEYS`; refused when one is also a scoring key."""
    environ = os.environ if environ is None else environ
    keys = _checked([k.strip() for k in environ.get(ADMIN_KEYS_ENV, "").split(",") if k.strip()], "admin")
    if set(keys) & set(api_keys):
        raise KeyConfigError(f"a key in {ADMIN_KEYS_ENV} is also a scoring key: keep the two sets apart")
    return keys


def _checked(keys: list[str], what: str) -> list[str]:
    short = [i for i, key in enumerate(keys) if len(key) < MIN_KEY_LENGTH]
    if short:
        raise KeyConfigError(
            f"{len(short)} {what} key(s) are shorter than {MIN_KEY_LENGTH} characters; "
            "use long random keys (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return list(dict.fromkeys(keys))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys: list[str], insecure_no_auth: bool = False) -> str:
    """Refuse an open router on a non-loopback address; return the line `kidsart serve` prints about keys."""
    if keys:
        return f"API keys on ({len(keys)} key{'s' if len(keys) != 1 else ''}): /v1/* needs Authorization: Bearer <key>"
    if is_loopback(host):
        log.warning(
            "no API key configured: anyone on this machine can call the router at %s "
            "(set %s or --api-key-file before serving on another address)",
            host,
            API_KEYS_ENV,
        )
        return f"API keys off: serving on loopback address {host} only"
    if not insecure_no_auth:
        raise KeyConfigError(
            f"refusing to serve on {host} without API keys: anyone who can reach it could use it; set "
            f"{API_KEYS_ENV} or --api-key-file, listen on 127.0.0.1, or pass --insecure-no-auth"
        )
    log.warning("INSECURE: serving on %s without API keys (--insecure-no-auth)", host)
    return f"API keys OFF on {host} (--insecure-no-auth): anyone who can reach it can use it"
