"""API keys without a live stack: where they come from, how they are checked, when serving without them is refused."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from serve.keys import KeyConfigError, check_exposure, digest, key_matches, load_api_keys

GOOD = "k" * 24
OTHER = "o" * 24


def test_keys_come_from_the_environment_and_a_key_file(tmp_path):
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# district office\n{OTHER}\n\n{GOOD}\n")
    assert load_api_keys(key_file, environ={"KIDSART_API_KEYS": f" {GOOD} ,, "}) == [GOOD, OTHER]
    assert load_api_keys(None, environ={}) == []
    with pytest.raises(KeyConfigError, match="shorter than 16"):
        load_api_keys(None, environ={"KIDSART_API_KEYS": "short"})
    with pytest.raises(KeyConfigError, match="cannot read"):
        load_api_keys(tmp_path / "missing.txt", environ={})
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(KeyConfigError, match="holds no key"):
        load_api_keys(tmp_path / "empty.txt", environ={})


def test_a_presented_key_is_checked_against_digests_only():
    digests = [digest(OTHER), digest(GOOD)]
    assert key_matches(f"Bearer {GOOD}", digests) and key_matches(f"bearer {OTHER}", digests)
    for header in (None, "", GOOD, f"Basic {GOOD}", "Bearer ", f"Bearer {GOOD}x", f"Bearer {GOOD[:-1]}"):
        assert not key_matches(header, digests), header
    assert not key_matches(f"Bearer {GOOD}", [])


def test_serving_without_keys_is_loopback_only_unless_told_insecure():
    assert "loopback" in check_exposure("127.0.0.1", [])
    assert "loopback" in check_exposure("::1", [])
    assert "API keys on (1 key)" in check_exposure("0.0.0.0", [GOOD])
    with pytest.raises(KeyConfigError, match="refusing to serve on 0.0.0.0 without API keys"):
        check_exposure("0.0.0.0", [])
    assert "OFF" in check_exposure("10.1.2.3", [], insecure_no_auth=True)


def test_kidsart_serve_refuses_an_open_non_loopback_router_before_starting_anything(tmp_path):
    kidsart = str(Path(sys.executable).with_name("kidsart"))
    env = {k: v for k, v in os.environ.items() if k != "KIDSART_API_KEYS"}
    result = subprocess.run(
        [kidsart, "serve", "--host", "0.0.0.0"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert result.returncode == 2 and "refusing to serve on 0.0.0.0 without API keys" in result.stderr
    bad = subprocess.run(
        [kidsart, "serve", "--api-key-file", str(tmp_path / "nope.txt")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert bad.returncode == 2 and "cannot read" in bad.stderr
