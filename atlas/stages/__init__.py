"""The build's stages, one module each; `atlas.pipeline` runs them in order and `run.py` says how a stage runs."""
