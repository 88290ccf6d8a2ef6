"""Records that the build writes into the store's facts and the site reads back: one type each."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SaeVersion:
    """One SAE of the atlas as the store lists it (`atlas_versions`) and the site shows it: the main one first."""

    name: str
    slug: str
    schema: str
    site_path: str  # the version's site root, relative to the main site's root ('' for the main SAE)

    def as_info(self) -> dict:
        return asdict(self)

    @classmethod
    def from_info(cls, entry: dict) -> "SaeVersion":
        return cls(str(entry["name"]), str(entry["slug"]), str(entry["schema"]), str(entry["site_path"]))
