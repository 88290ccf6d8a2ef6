"""The long tables' rows (neighbours and logit effects on every feature page, cluster members), built in Python
like the example rows: a 16k-feature site has some 700k of them, and as template loops they took as long as
the rest of the templates.

Text comes escaped once per feature or token (SiteModel, TokenHtml); numbers are escaped here.
"""

from __future__ import annotations

from typing import NamedTuple

from markupsafe import Markup, escape


class NeighbourRow(NamedTuple):
    feature: int
    label: Markup  # escaped (SiteModel.label_html)
    score: str
    href: str  # from SiteUrls: a relative path of ids and fixed names, safe as it is
    example: Markup  # the neighbour's strongest context, escaped (SiteModel.snippet_html)


class LogitRow(NamedTuple):
    token: Markup  # escaped display text (TokenHtml.escaped)
    value: str
    width: int  # bar length in percent of the largest magnitude


class MemberRow(NamedTuple):
    feature: int
    label: Markup  # escaped (SiteModel.label_html)
    density: str
    href: str  # from SiteUrls, safe as it is


def member_rows(rows: list[MemberRow]) -> Markup:
    return Markup("".join(
        f'<tr><td><a href="{r.href}">#{int(r.feature)}</a></td><td>{r.label}</td><td>{escape(r.density)}</td></tr>'
        for r in rows
    ))


def neighbour_rows(rows: list[NeighbourRow]) -> Markup:
    return Markup("".join(
        f'<tr><td><a href="{r.href}">#{int(r.feature)}</a></td><td>{r.label}</td>'
        f'<td>{escape(r.score)}</td><td class="nbex">{r.example}</td></tr>'
        for r in rows
    ))


def logit_rows(rows: list[LogitRow], sign: str) -> Markup:
    """Rows of the promoted ('pos') or suppressed ('neg') tokens."""
    return Markup("".join(
        f'<tr><td class="lt">{r.token}</td><td class="lv {sign}"><span class="bar" '
        f'style="width:{int(r.width)}%"></span>{escape(r.value)}</td></tr>'
        for r in rows
    ))
