"""A small synchronous client of the router's /v1/score API (used by `kidsart score`)."""
from __future__ import annotations

import time
from pathlib import Path

import httpx

from adapters.errors import InputError, KidsArtError


class RouterRequestError(KidsArtError):
    """The router refused the request or could not be reached after retries."""

    kind = "router_error"

    def __init__(self, message: str, status: int | None = None, body: dict | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


def score_bytes(
    url: str,
    data: bytes,
    *,
    filename: str = "image",
    dimensions: list[str] | None = None,
    request_id: str | None = None,
    timeout: float = 300.0,
    retries: int = 5,
    client: httpx.Client | None = None,
    description: str | None = None,
    feedback: bool = False,
) -> dict:
    """POST one image as multipart (with the artwork's description, if given, and `feedback=true` to ask for a
    comment); retry 429/503 and connection errors with backoff; 4xx raises."""
    fields = {}
    if feedback:
        fields["feedback"] = "true"
    if dimensions:
        fields["dimensions"] = ",".join(dimensions)
    if request_id:
        fields["id"] = request_id
    if description:
        fields["description"] = description
    own = client is None
    client = client or httpx.Client(timeout=timeout)
    try:
        delay = 1.0
        for attempt in range(retries + 1):
            try:
                response = client.post(
                    f"{url.rstrip('/')}/v1/score", files={"image": (filename, data)}, data=fields
                )
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise RouterRequestError(f"router at {url} unreachable: {exc.__class__.__name__}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 30)
                continue
            if response.status_code == 200:
                return response.json()
            body = _json_or_none(response)
            message = (body or {}).get("error", {}).get("message", response.text[:300])
            if response.status_code in (429, 503) and attempt < retries:
                time.sleep(float(response.headers.get("Retry-After", delay)))
                delay = min(delay * 2, 30)
                continue
            raise RouterRequestError(f"{response.status_code}: {message}", response.status_code, body)
        raise RouterRequestError(f"router at {url} still busy after {retries} retries")
    finally:
        if own:
            client.close()


def score_file(url: str, path: Path, **kwargs) -> dict:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from exc
    return score_bytes(url, data, filename=path.name, **kwargs)


def _json_or_none(response: httpx.Response) -> dict | None:
    try:
        value = response.json()
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
