"""Ray's dashboard token (~/.ray/auth_token) is readable by the user alone once a search has started Ray.

Ray 2.60 writes a new token with the umask's mode (0644 under 022): anyone who can enter the
home folder could read it and run code through the dashboard's job API.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading

import pytest

from tests.tuning.helpers import REPO
from tuning.search.ray_cluster import keep_token_private, make_token_if_missing


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_token_others_can_read_is_made_private(tmp_path, capsys):
    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("secret")
    token.chmod(0o644)
    keep_token_private(token)
    assert mode(token) == 0o600
    assert token.read_text() == "secret"
    assert capsys.readouterr().err == ""


def test_the_tokens_folder_is_made_private_when_the_search_makes_it(tmp_path):
    token = tmp_path / ".ray" / "auth_token"
    keep_token_private(token)
    assert mode(token.parent) == 0o700 and not token.exists()


def test_a_private_token_is_left_as_it_is(tmp_path, capsys):
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o400)
    keep_token_private(token)
    assert mode(token) == 0o400 and capsys.readouterr().err == ""


def test_a_token_that_is_a_symbolic_link_is_one_warning_and_left_alone(tmp_path, capsys):
    (tmp_path / "elsewhere").write_text("secret")
    (tmp_path / "elsewhere").chmod(0o644)
    (tmp_path / "auth_token").symlink_to(tmp_path / "elsewhere")
    keep_token_private(tmp_path / "auth_token")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: Ray's dashboard token {tmp_path / 'auth_token'} is a symbolic link:")
    assert mode(tmp_path / "elsewhere") == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_token_of_another_user_that_others_can_read_is_one_warning(tmp_path, capsys):
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    os.chown(token, 65534, -1)
    keep_token_private(token)
    (line,) = capsys.readouterr().err.splitlines()
    assert "is mode 0644 and belongs to user id 65534, not to you" in line and "chmod 600" in line
    assert mode(token) == 0o644  # not the search's to change


@pytest.fixture
def token_env(monkeypatch):
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_missing_token_is_made_private_from_its_first_byte_and_an_existing_one_kept(tmp_path, token_env):
    token = tmp_path / "auth_token"
    make_token_if_missing(token)
    text = token.read_text()
    assert len(text) == 64 and int(text, 16) >= 0  # 32 random bytes in hexadecimal, as Ray's generator makes
    assert mode(token) == 0o600
    make_token_if_missing(token)
    assert token.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["auth_token"]  # no temporary file left


@pytest.mark.parametrize(
    "setting", [("RAY_AUTH_MODE", "disabled"), ("RAY_AUTH_TOKEN", "given"), ("RAY_AUTH_TOKEN_PATH", "/elsewhere")]
)
def test_no_token_is_made_where_ray_is_told_to_use_another_or_none(tmp_path, token_env, setting):
    token_env.setenv(*setting)
    make_token_if_missing(tmp_path / "auth_token")
    assert list(tmp_path.iterdir()) == []


def test_a_symbolic_link_where_the_token_goes_is_not_followed(tmp_path, token_env):
    (tmp_path / "auth_token").symlink_to(tmp_path / "elsewhere")
    make_token_if_missing(tmp_path / "auth_token")
    assert not (tmp_path / "elsewhere").exists()


def test_searches_starting_at_once_all_read_the_one_token_made_first(tmp_path, token_env):
    token, start, seen = tmp_path / "auth_token", threading.Barrier(8), []

    def search() -> None:
        start.wait()
        make_token_if_missing(token)
        seen.append(token.read_text())

    threads = [threading.Thread(target=search) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 8 and set(seen) == {token.read_text()} and len(seen[0]) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["auth_token"]


def test_a_local_start_leaves_the_token_it_wrote_private(tmp_path):
    """A real start in an empty home: the search makes the token (0600, its folder 0700), and Ray uses it."""
    script = textwrap.dedent("""
        from tuning.search import ray_cluster
        ray_cluster.start_ray(address=None, dashboard=False, dashboard_host="127.0.0.1", dashboard_port=None)
        ray_cluster.stop_ray()
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    token = tmp_path / ".ray" / "auth_token"
    assert token.read_text().strip()  # Ray wrote one: authentication is on
    assert mode(token) == 0o600 and mode(token.parent) == 0o700
    assert "dashboard token" not in result.stderr
