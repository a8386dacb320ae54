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

import pytest

from tests.tuning.helpers import REPO
from tuning.search.ray_cluster import keep_token_private


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


def test_a_local_start_leaves_the_token_it_wrote_private(tmp_path):
    """A real start in an empty home: Ray writes a new token, the search makes it 0600."""
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
