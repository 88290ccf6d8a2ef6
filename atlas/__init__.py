"""feature-atlas: explain every feature of a sparse autoencoder and publish it as a static site."""

__version__ = "0.1.0"
