"""The language model side: the adapter in front of Hugging Face models, hook points, and hook activations."""
