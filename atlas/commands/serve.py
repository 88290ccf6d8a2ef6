"""`atlas serve`: preview a built site on localhost (the site itself needs no server)."""

from __future__ import annotations

import functools
import http.server
from pathlib import Path

from atlas.commands import open_atlas
from atlas.errors import AtlasError


def site_folder(target: str | Path) -> Path:
    """The site folder named by `target`: the folder itself when it holds index.html, else the one its atlas records."""
    target = Path(target)
    if (target / "index.html").is_file():
        return target
    with open_atlas(target) as store:
        return Path(store.info().get("site_dir_abs", "site"))


def serve(site_dir: Path, port: int = 8000) -> None:
    """Preview the site on http://localhost:PORT until Ctrl-C."""
    if not (site_dir / "index.html").is_file():
        raise AtlasError(f"{site_dir} holds no index.html; build the atlas first")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site_dir))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as httpd:
        print(f"Serving {site_dir} at http://127.0.0.1:{port}/ (Ctrl-C stops)")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass
