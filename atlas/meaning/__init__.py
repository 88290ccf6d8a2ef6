"""What a feature means: the sentence encoder, contexts embedded in their sequences, where features fire, and the
OpenAI-compatible endpoint that explains and scores features when one is configured.

The pure parts (candidate phrases, ranking, held-out splits, AUROC, query relevance) live in `atlas/analysis/`
(`explain.py`, `scoring.py`, `relevance.py`); this package holds what needs a model, the SAE or the network.
"""
