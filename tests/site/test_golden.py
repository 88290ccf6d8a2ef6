"""The golden site: a small hand-filled store renders to exactly the committed pages (see site_golden.py)."""

from __future__ import annotations

from site_golden import GOLDEN, differences, render_golden, vendored


def test_the_golden_store_renders_the_committed_site(tmp_path):
    site = render_golden(tmp_path)
    assert any(vendored(p.relative_to(site).as_posix()) for p in site.rglob("*"))  # the rule still matches
    problems = differences(site)
    assert not problems, (f"the rendered site differs from {GOLDEN}; if the change is intended, run "
                          f"`make golden` and review the diff.\n{problems}")


def test_a_changed_page_is_reported_with_a_diff(tmp_path):
    site = render_golden(tmp_path)
    page = site / "about.html"
    page.write_text(page.read_text().replace("<h2>Provenance</h2>", "<h2>Origins</h2>"))
    problems = differences(site)
    assert problems.startswith("about.html differs (and 0 other files):")
    assert "-<h2>Provenance</h2>" in problems and "+<h2>Origins</h2>" in problems
