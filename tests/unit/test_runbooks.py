"""The /runbooks page, rendered from docs/runbooks.md without a server."""

from __future__ import annotations

import re
from http import HTTPStatus

from exporter import runbooks
from tests.support import ROOT


def headings() -> list[str]:
    """Markdown headings outside fenced code blocks."""
    found, fenced = [], False
    for line in (ROOT / "docs" / "runbooks.md").read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"#{1,6}\s+(.+?)\s*$", line)):
            found.append(match.group(1))
    return found


def test_every_heading_of_the_runbooks_gets_githubs_anchor() -> None:
    status, content_type, body = runbooks.page("/runbooks")
    assert status == HTTPStatus.OK and content_type.startswith("text/html")
    ids = re.findall(r'<h[1-6] id="([^"]+)"', body.decode())
    assert ids == [runbooks.anchor(h) for h in headings()]
    assert "whatsappmessagestablelarge" in ids
    assert runbooks.anchor("How the automatic fixes are limited") == \
        "how-the-automatic-fixes-are-limited"


def test_repository_links_render_as_text_and_anchors_stay_links() -> None:
    html = runbooks.page("/runbooks")[2].decode()
    assert 'href="../' not in html
    assert '<span title="../alerts/wa-exporter.rules.yml in the wa-exporter repository">' in html
    assert '<a href="#whatsappmessagestablelarge">' in html


def test_other_paths_are_not_found() -> None:
    assert runbooks.page("/runbooks/../metrics")[0] == HTTPStatus.NOT_FOUND
