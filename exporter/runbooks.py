"""The runbooks at ``/runbooks``: docs/runbooks.md, shipped in the package, as one HTML page.

Every heading gets the anchor GitHub would give it (``#whatsappmessagestablelarge``), so an
alert's ``runbook_url`` opens the same section here as in the repository; WA installs are
often air-gapped, and the exporter is the one part of the monitoring that is surely there.
Links into the repository (``../alerts/...``) have no page here and render as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from html import escape
from http import HTTPStatus
from importlib.resources import files
from itertools import pairwise
from typing import Any

from exporter.landing import STYLE

PATH = "/runbooks"
HTML = "text/html; charset=utf-8"


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def source() -> str:
    return files("exporter").joinpath("runbooks.md").read_text(encoding="utf-8")


@cache
def render_page() -> bytes:
    """The page, rendered once: the markdown cannot change under a running exporter."""
    from markdown_it import MarkdownIt  # only when a person opens the page

    md = MarkdownIt("commonmark").enable("table")
    md.add_render_rule("link_open", _link_open)
    md.add_render_rule("link_close", _link_close)
    tokens = md.parse(source())
    for opening, inline in pairwise(tokens):
        if opening.type == "heading_open":
            opening.attrSet("id", anchor(inline.content))
    body = md.renderer.render(tokens, md.options, {})
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>wa-exporter runbooks</title><style>{STYLE}"
            "pre{background:#f5f7f9;padding:.6rem;overflow-x:auto}</style></head>"
            f"<body>{body}</body></html>").encode()


def _repository_link(href: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:|#", href)


def _link_open(renderer: Any, tokens: Sequence[Any], idx: int, options: Any,
               env: dict[str, Any]) -> str:
    href = str(tokens[idx].attrGet("href") or "")
    plain = _repository_link(href)
    env.setdefault("plain_links", []).append(plain)
    if plain:
        return f'<span title="{escape(href)} in the wa-exporter repository">'
    return str(renderer.renderToken(tokens, idx, options, env))


def _link_close(renderer: Any, tokens: Sequence[Any], idx: int, options: Any,
                env: dict[str, Any]) -> str:
    if env["plain_links"].pop():
        return "</span>"
    return str(renderer.renderToken(tokens, idx, options, env))


def page(path: str) -> tuple[int, str, bytes]:
    """``(status, content type, body)`` for a GET of ``path`` under ``/runbooks``."""
    if path.rstrip("/") != PATH:
        return HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", b"404 page not found\n"
    return HTTPStatus.OK, HTML, render_page()
