"""The sentence encoder: pooled as sentence-transformers pools all-MiniLM-L6-v2, and contexts embedded in their
sequences land near texts about the same thing."""

import numpy as np
import pytest
import torch

from atlas.meaning.contexts import ContextCache, embed_contexts, sequence_text
from atlas.meaning.encoder import default_folder, load_encoder


@pytest.fixture(scope="module")
def encoder():
    return load_encoder(str(default_folder()))


def test_encode_is_the_l2_normalised_mean_of_the_token_states(encoder):
    texts = ["the immune system fights infection", "Paris is a city in France"]
    got = encoder.encode(texts)
    enc = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1).numpy()
    assert np.abs(got - ref).max() < 1e-5 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert encoder.pooling == "mean" and encoder.max_len == 256


def test_token_states_cover_long_texts_window_by_window(encoder):
    (states,) = encoder.token_states(["word " * 700], batch_tokens=2048)
    assert states.states.shape == (700, encoder.dim) and (np.abs(states.states).sum(1) > 0).all()
    assert states.offsets[1].tolist() == [5, 9]


def test_contexts_are_embedded_where_they_stand(encoder):
    pieces = [" the", " fox", " ran", " into", " the", " forest", ".", " stock", " prices", " fell", " sharply",
              " on", " the", " market"]
    vocab = {i: p for i, p in enumerate(pieces)}
    tokens = np.arange(len(pieces), dtype=np.int32)
    starts = np.array([0, len(pieces)], np.int64)
    assert sequence_text(pieces)[0].startswith(" the fox ran")
    vecs = embed_contexts(encoder, tokens, starts, np.array([1, 9]), lambda ids: [vocab[i] for i in ids], radius=2)
    assert vecs.shape == (2, encoder.dim) and np.allclose(np.linalg.norm(vecs.astype(np.float32), axis=1), 1, atol=1e-2)
    queries = encoder.encode(["a fox in the woods", "shares on the stock exchange"])
    sims = vecs.astype(np.float32) @ queries.T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]


def test_the_context_cache_gives_the_same_vectors_and_reads_no_sequence_twice(encoder, tmp_path):
    pieces = [" the", " fox", " ran", ".", " rain", " fell", " on", " the", " town", ".", " a", " quiet", " market"]
    tokens = np.arange(len(pieces), dtype=np.int32)
    starts = np.array([0, 4, 10, len(pieces)], np.int64)
    strings = lambda ids: [pieces[i] for i in ids]  # noqa: E731
    direct = embed_contexts(encoder, tokens, starts, np.array([1, 5, 11]), strings, radius=2)
    calls = []
    counting = type("Counting", (), {"dim": encoder.dim, "token_states": lambda self, texts, b: (
        calls.append(len(texts)), encoder.token_states(texts, b))[1]})()
    cache = ContextCache(tmp_path, "k", len(pieces), 3, encoder.dim)
    first = embed_contexts(counting, tokens, starts, np.array([1, 5]), strings, radius=2, cache=cache)
    assert calls == [2] and cache.done.tolist() == [True, True, False]
    again = ContextCache(tmp_path, "k", len(pieces), 3, encoder.dim)  # a later build opens it from disk
    both = embed_contexts(counting, tokens, starts, np.array([1, 5, 11]), strings, radius=2, cache=again)
    assert calls == [2, 1]
    assert np.allclose(both.astype(np.float32), direct.astype(np.float32), atol=2e-3)
    assert np.array_equal(first, both[:2])
