"""The site stage: render the store into the static site, or keep the site when its inputs are unchanged."""

from __future__ import annotations

from atlas.config import Config
from atlas.stages.run import Keyed, OwnLedger, Outcome, Reporter, Status, run_keyed


def site(cfg: Config, stage_keys: dict[str, str], report: Reporter) -> str:
    """Render the site, or keep it when it was rendered from the same inputs and is still intact.

    The key covers the stages' results (`stage_keys`, in the order given) and the site settings; render_site
    adds the store's facts the pages show (not the build time and stage timings, which change on every run), the
    templates and its own code, and decides from all that whether the site on disk is kept."""
    from atlas.site import render_site

    cache_dir = cfg.resolve(cfg.atlas.cache_dir)

    def render(key: str) -> Outcome[None]:
        # Feature-page pieces and the replaced site are kept beside the activations, unless the config keeps
        # nothing on disk.
        stats = render_site(cfg.resolve(cfg.atlas.store), cfg.resolve(cfg.atlas.out_dir),
                            short_window=cfg.site.short_window, key=key,
                            cache_dir=cache_dir if cfg.atlas.cache_max_gb > 0 else None)
        note = f"{stats['n_pages']:,} pages, {stats['bytes'] / 2**20:,.1f} MiB"
        if not stats["reused"]:
            note += f", {stats['n_files'] - stats['kept']:,} files written"
        return Outcome(note=note, status=Status.REUSED if stats["reused"] else Status.COMPUTED)

    return run_keyed(Keyed("site", inputs={**stage_keys, "settings": cfg.section_dict("site")},
                           ledger=OwnLedger(), compute=render), report).key
