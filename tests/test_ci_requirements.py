"""Where CI requires them (SNN_REQUIRE_KERNELS=1, SNN_REQUIRE_BROWSER=1, set by .ci/run), the C-kernel and browser
tests fail without gcc or Chromium instead of skipping."""

from __future__ import annotations

import pytest

from snn.fastpath import native
from tests.snn.test_fast_paths import require_kernels
from tests.tuning import cdp_browser


def test_without_a_compiler_the_kernel_tests_skip_or_fail_where_required(monkeypatch):
    monkeypatch.setattr(native, "compiler", lambda: None)
    monkeypatch.delenv("SNN_REQUIRE_KERNELS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="need a C compiler"):
        require_kernels()
    monkeypatch.setenv("SNN_REQUIRE_KERNELS", "1")
    with pytest.raises(pytest.fail.Exception, match="SNN_REQUIRE_KERNELS=1 requires their tests to run"):
        require_kernels()


def test_without_chromium_the_browser_tests_skip_or_fail_where_required(monkeypatch):
    monkeypatch.setattr(cdp_browser, "chromium_path", lambda: None)
    monkeypatch.delenv("SNN_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no chromium on PATH"):
        cdp_browser.require_chromium()
    monkeypatch.setenv("SNN_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="SNN_REQUIRE_BROWSER=1 requires the browser tests to run"):
        cdp_browser.require_chromium()


def test_ci_installs_gcc_and_chromium_and_requires_their_tests():
    from tests.tuning.helpers import REPO

    script = (REPO / ".ci" / "run").read_text()
    assert "missing+=(gcc)" in script and "missing+=(chromium)" in script
    assert "export SNN_REQUIRE_KERNELS=1 SNN_REQUIRE_BROWSER=1" in script


def test_the_code_is_clean_under_the_linter_and_the_formatter_ci_runs():
    """.ci/run runs `ruff check .` and `ruff format --check .` (pyproject.toml's settings) before the tests."""
    import shutil
    import subprocess
    import sys

    from tests.tuning.helpers import REPO

    script = (REPO / ".ci" / "run").read_text()
    assert "\nruff check .\n" in script and "\nruff format --check .\n" in script
    ruff = shutil.which("ruff") or pytest.skip("ruff is not installed (it comes with the dev extra)")
    for command in ([ruff, "check", "."], [ruff, "format", "--check", "."]):
        run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (" ".join(command[1:]), run.stdout[-3000:], sys.executable)
