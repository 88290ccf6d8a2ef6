"""Rendering the static site from the store alone: URLs, page contexts, charts, templates, one writer."""

__all__ = ["render_site"]


def __getattr__(name: str):
    # Imported on first use, so `atlas inspect` and `atlas search` can take `atlas.site.urls` without Jinja.
    if name == "render_site":
        from atlas.site.render import render_site

        return render_site
    raise AttributeError(f"module 'atlas.site' has no attribute {name!r}")
