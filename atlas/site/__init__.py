"""Rendering the static site from the store alone: URLs, page contexts, charts, templates, one writer."""

from atlas.site.render import render_site

__all__ = ["render_site"]
