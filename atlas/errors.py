"""Errors the atlas raises on bad input; only the CLI turns them into exit codes and messages."""


class AtlasError(Exception):
    """A problem the user can fix: the message names the file or setting and the fix."""

    exit_code = 2


class ConfigError(AtlasError):
    """The TOML config is missing, malformed or holds an invalid value."""


class SaeFormatError(AtlasError):
    """An SAE file is missing, malformed, of an unknown format, or inconsistent with itself."""


class ModelError(AtlasError):
    """The model cannot be loaded, or the requested layer/hook does not exist."""


class CorpusError(AtlasError):
    """The corpus is missing, empty, or not readable as UTF-8 text."""


class DimensionError(AtlasError):
    """Two inputs disagree on a size (e.g. the SAE's d_in and the hooked layer's width)."""


class SiteRenderError(AtlasError):
    """The site cannot be written where asked, or a file it needs is missing."""
