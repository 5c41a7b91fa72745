"""The review app's JSON API and pages, in-process (Starlette's test client): reviewer keys as bearer tokens
(401 without), a stale save 409 with the newer values, the login cookie, CSRF (403 without the token), and
every value from the run escaped on the pages. The real browser and the real server: test_review_browser.py."""

import re

import pytest
from fastapi.testclient import TestClient

from serve.keys import KeyConfigError
from serve.review.app import build_review_app
from serve.review.keys import ReviewerKeys
from serve.review.run import ReviewRun
from serve.review.service import ReviewService
from serve.review.store import ReviewStore
from tests.test_review_run import HOSTILE, scored_run  # noqa: F401 (the module-scoped fixture)

ANA, BEN = "ana-key-0000000000000001", "ben-key-0000000000000002"


@pytest.fixture
def app(scored_run, tmp_path):  # noqa: F811
    _, out, _ = scored_run
    service = ReviewService(ReviewRun(out), ReviewStore(tmp_path))  # a fresh store per test
    keys = ReviewerKeys.load(environ={"KIDSART_REVIEW_KEYS": f"ana:{ANA},ben:{BEN}"})
    return build_review_app(service, keys, secret="test-secret")


def _bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_the_api_needs_a_key_orders_the_queue_and_refuses_a_stale_save(app):
    client = TestClient(app)
    assert client.get("/api/queue").status_code == 401
    queue = client.get("/api/queue", headers=_bearer(ANA)).json()
    first = queue["items"][0]["id"]
    assert queue["reviewed"] == 0 and queue["total"] == len(queue["items"])
    art = client.get(f"/api/artworks/{first}", headers=_bearer(ANA)).json()
    assert art["version"] == 0 and set(art["scores"]["realism"]) >= {"score", "probs", "std"}
    saved = client.post(
        f"/api/artworks/{first}/review", headers=_bearer(ANA), json={"levels": {"realism": 4}, "seen_version": 0}
    )
    assert saved.status_code == 200 and saved.json()["version"] == 1
    stale = client.post(
        f"/api/artworks/{first}/review", headers=_bearer(BEN), json={"levels": {"realism": 1}, "seen_version": 0}
    )
    assert stale.status_code == 409 and stale.json()["current"]["levels"] == {"realism": 4}
    assert "saved by ana" in stale.json()["error"]["message"]
    bad = client.post(
        f"/api/artworks/{first}/review", headers=_bearer(BEN), json={"levels": {"realism": 9}, "seen_version": 1}
    )
    assert bad.status_code in (400, 422) and "1..5" in bad.json()["error"]["message"]
    assert client.get("/api/queue", headers=_bearer(BEN)).json()["reviewed"] == 1
    assert client.get("/api/artworks/nope", headers=_bearer(BEN)).status_code == 404


def test_pages_log_in_with_a_cookie_need_the_csrf_token_and_escape_the_runs_values(app):
    client = TestClient(app)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert client.post("/login", data={"key": "wrong-key-000000000000"}).status_code == 401
    login = client.post("/login", data={"key": ANA}, follow_redirects=False)
    cookie = login.headers["set-cookie"].lower()
    assert login.status_code == 303 and "httponly" in cookie and "samesite=strict" in cookie
    queue = client.get("/")
    assert HOSTILE not in queue.text and "&lt;img src=x onerror=alert(1)&gt;" in queue.text
    artwork_id = re.search(r'href="/artworks/([0-9a-f]{16})"', queue.text).group(1)
    page = client.get(f"/artworks/{artwork_id}")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    without = client.post(f"/artworks/{artwork_id}", data={"level_realism": "2", "seen_version": "0"})
    assert without.status_code == 403
    saved = client.post(
        f"/artworks/{artwork_id}", data={"csrf": token, "level_realism": "2", "seen_version": "0", "confirm": "0"}
    )
    assert saved.status_code == 200 and "Saved (version 1)" in saved.text
    assert client.get(f"/images/{artwork_id}").status_code == 200
    report = client.get("/report").text
    assert f'href="/artworks/{artwork_id}"' in report  # each card links to its artwork page


def test_reviewer_keys_are_named_and_long():
    with pytest.raises(KeyConfigError, match="shorter than 16"):
        ReviewerKeys.load(environ={"KIDSART_REVIEW_KEYS": "ana:short"})
    with pytest.raises(KeyConfigError, match="not `name:key`"):
        ReviewerKeys.load(environ={"KIDSART_REVIEW_KEYS": "no-colon-here-000000000"})
    keys = ReviewerKeys.load(environ={"KIDSART_REVIEW_KEYS": f"ana:{ANA}"})
    assert keys.reviewer(ANA) == "ana" and keys.reviewer(BEN) is None and len(keys) == 1
