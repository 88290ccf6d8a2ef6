"""The Jinja environment: autoescaping everywhere, strict about undefined names."""

from __future__ import annotations

from pathlib import Path

import jinja2

from atlas.site.safe import fmt, pct

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "site_templates"


def templates_dir(given: Path | None = None) -> Path:
    return Path(given) if given is not None else DEFAULT_TEMPLATES


def make_env(folder: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir(folder))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        # One environment serves one render: templates do not change under it, so no stat per page.
        auto_reload=False,
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    return env
