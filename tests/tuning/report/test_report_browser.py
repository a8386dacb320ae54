"""report.html opened in headless Chromium: every figure renders, no JS error, no network request."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.tuning.cdp_browser import HeadlessChromium, require_chromium
from tuning.report.build import SECTIONS, build_report


@pytest.fixture(autouse=True)
def chromium() -> str:
    return require_chromium()


pytest.importorskip("websocket", reason="websocket-client is not installed (pip install -e '.[dev]')")

# A plot has rendered when plotly.js has laid it out and drawn its SVG with every trace.
# Each trace's first point hovered, on the trace's own subplot. plotly.js throttles hovers on a figure to one
# per 50 ms and defers the rest to a timer, where an exception escapes the caller: each hover waits past
# that, so it runs inside its own try and a trace that cannot hover is counted, not an uncaught error.
HOVER_EVERY_TRACE = """(async () => {
    let figures = 0;
    for (const d of document.querySelectorAll('.js-plotly-plot')) {
        let hovered = 0;
        for (let i = 0; i < d._fullData.length; i++) {
            const trace = d._fullData[i];
            await new Promise(done => setTimeout(done, 60));
            try {
                Plotly.Fx.hover(d, [{curveNumber: i, pointNumber: 0}], (trace.xaxis || 'x') + (trace.yaxis || 'y'));
                hovered++;
            } catch (e) {}
        }
        figures += hovered > 0;
    }
    return figures;
})()"""
RENDERED_PLOTS = """Array.from(document.querySelectorAll('.js-plotly-plot')).filter(
    d => d._fullLayout && d.querySelector('.main-svg') && d._fullData.length === d.data.length
         && d.data.length > 0).length"""


def open_report(report: Path, profile: Path, screenshot: Path) -> tuple[int, int, HeadlessChromium]:
    """Load the report, wait for its plots, save a screenshot; (figures it says it holds, rendered, browser)."""
    with HeadlessChromium(profile) as browser:
        browser.navigate(report.as_uri())
        expected = int(browser.evaluate("document.getElementById('report').dataset.figureCount"))
        browser.wait_for(f"({RENDERED_PLOTS}) >= {expected}", timeout=30)
        rendered = browser.evaluate("document.querySelectorAll('.js-plotly-plot').length")
        browser.screenshot(screenshot)
    return expected, rendered, browser


def network_requests(browser: HeadlessChromium, report: Path) -> list[str]:
    """Requests other than the page itself; data: URLs (plotly draws heatmaps as inline images) fetch nothing."""
    return [url for url in browser.requests if url != report.as_uri() and not url.startswith("data:")]


def test_full_report_renders_every_figure_offline_without_errors(finished_experiment, tmp_path):
    report = build_report(finished_experiment)
    expected, rendered, browser = open_report(report, tmp_path / "profile", tmp_path / "report.png")
    assert expected == len(SECTIONS)
    assert rendered == expected
    assert browser.errors == []
    assert network_requests(browser, report) == []
    assert browser.requests[0] == report.as_uri()
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_browser_checks_catch_an_error_and_a_request(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="http://127.0.0.1:9/x.png">'
        '<script>console.error("logged"); throw new Error("boom")</script></body></html>'
    )
    with HeadlessChromium(tmp_path / "profile") as browser:
        browser.navigate(page.as_uri())
    assert network_requests(browser, page) == ["http://127.0.0.1:9/x.png"]
    assert any("boom" in e for e in browser.errors) and any("logged" in e for e in browser.errors)


def test_html_in_the_fields_of_a_crafted_folder_runs_nothing_in_the_browser(finished_experiment, tmp_path):
    """The crafted folder of test_report_escaping (HTML in every id, name and choice) drawn by plotly.js, its
    points hovered: no payload runs, no element it names appears."""
    from tests.tuning.report.test_report_escaping import LAYOUT_WORDS, craft_folder

    craft_folder(finished_experiment, numbers=False, keep=LAYOUT_WORDS)
    report = build_report(finished_experiment)
    with HeadlessChromium(tmp_path / "profile") as browser:
        browser.navigate(report.as_uri())
        expected = int(browser.evaluate("document.getElementById('report').dataset.figureCount"))
        browser.wait_for(f"({RENDERED_PLOTS}) >= {expected}", timeout=30)
        hovered = browser.evaluate(HOVER_EVERY_TRACE)
        ran = browser.evaluate("window.__xss === 1")
        injected = browser.evaluate(
            "document.querySelectorAll('img, iframe, object, embed, [onerror], [onload]').length"
        )
    assert expected == len(SECTIONS) and hovered >= expected - 2  # a table and a heatmap-only figure may not hover
    assert ran is False and injected == 0
    assert browser.errors == []
