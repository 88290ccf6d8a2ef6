"""The embedded demo: a real corpus assembled from packages and a TopK SAE trained on the spot."""
