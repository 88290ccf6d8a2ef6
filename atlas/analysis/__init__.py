"""Pure analysis of an SAE's features: arrays in, arrays out, seeded; no store, no model.

neighbours (decoder cosine) · basis (vectors to cluster by) · clusters (nested Ward hierarchy,
coherence, basis choice) · layout (UMAP map) · labels (feature labels, cluster names) ·
explanations (override file, Neuronpedia and delphi imports).
"""

from atlas.analysis.basis import feature_vectors
from atlas.analysis.clusters import Hierarchy, build_hierarchy, choose_basis, coherence
from atlas.analysis.layout import umap_layout
from atlas.analysis.labels import cluster_names, context_docs, context_docs_for, feature_labels, hierarchy_names
from atlas.analysis.neighbours import decoder_neighbours

__all__ = [
    "Hierarchy", "build_hierarchy", "choose_basis", "cluster_names", "coherence", "context_docs", "context_docs_for",
    "decoder_neighbours", "feature_labels", "feature_vectors", "hierarchy_names", "umap_layout",
]
