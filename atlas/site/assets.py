"""The site's files that are not pages: stylesheet, scripts, plotly, the map's data and the search shards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from atlas.errors import SiteRenderError
from atlas.site.charts import scale_css
from atlas.site.data import map_script, search_scripts, thumb_svg
from atlas.site.model import SiteModel
from atlas.site.urls import SiteUrls
from atlas.site.writer import SiteWriter

# Scripts each page kind loads, by registered asset name (order matters: data before code).
INDEX_SCRIPTS = ("static/plotly.min.js", "data/map.js", "static/map.js", "static/search.js")
FEATURE_SCRIPTS = ("data/tokens.js", "static/feature.js")


def _plotly_js() -> bytes:
    """The plotly.js bundled with the Python package, found without importing the package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise SiteRenderError("the plotly package is not installed; the map needs its bundled plotly.min.js")
    return (Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js").read_bytes()


def write_assets(writer: SiteWriter, urls: SiteUrls, model: SiteModel, folder: Path) -> None:
    """Write every asset under its content-hashed path and register it with `urls`, before any page links it."""
    static = folder / "static"
    files: dict[str, bytes] = {
        "static/atlas.css": (static / "atlas.css").read_bytes() + scale_css().encode(),
        "static/map.js": (static / "map.js").read_bytes(),
        "static/search.js": (static / "search.js").read_bytes(),
        "static/feature.js": (static / "feature.js").read_bytes(),
        "static/plotly.min.js": _plotly_js(),
        "static/mapthumb.svg": thumb_svg(model),
        "data/map.js": map_script(model),
        "data/tokens.js": model.tokens.script(),
    }
    for k, content in enumerate(search_scripts(model)):
        files[f"data/search{k}.js"] = content
    for name, content in files.items():
        writer.write(urls.register_asset(name, content), content)


def search_shard_paths(urls: SiteUrls) -> list[str]:
    """The registered search shards' content-hashed paths, in order."""
    out, k = [], 0
    while True:
        try:
            out.append(urls.asset(f"data/search{k}.js"))
        except KeyError:
            return out
        k += 1
