"""The offline explainer on planted features whose answer is known: a word feature is named by its word, a word
piece as a piece (never by a word that contains it), and the phrase choice follows the activating contexts."""

import re

import numpy as np
import pytest

from atlas.analysis import explain as ex

FILLER = [" the", " old", " man", " saw", " a", " small", " boat", " near", " the", " river", " at", " dawn"]


def _example(tokens, focus, acts=None, value=1.0):
    acts = acts if acts is not None else [value if i == focus else 0.0 for i in range(len(tokens))]
    return ex.Example(tokens, focus, acts, value)


def _planted_word(word=" lazy", n=12, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        left = list(rng.choice(FILLER, 4))
        right = list(rng.choice(FILLER, 4))
        out.append(_example(left + [word] + right, 4, value=1.0 + i / n))
    return out


def _unit(v):
    return v / np.linalg.norm(v)


def _vectors(phrases, planted=(), dim=32, seed=1):
    """Random unit vectors per phrase; the planted phrases all point along the first axis."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in phrases:
        v = rng.normal(size=dim)
        v[0] = 0.0
        out[p] = _unit(v)
    for p in planted:
        out[p] = _unit(np.eye(dim)[0] + 0.05 * rng.normal(size=dim))
    return out


def _contexts(n, dim=32, along=True, seed=2):
    rng = np.random.default_rng(seed)
    base = np.eye(dim)[0] if along else np.zeros(dim)
    return np.stack([_unit(base + 0.7 * rng.normal(size=dim)) for _ in range(n)]).astype(np.float32)


def test_word_spans_join_pieces_into_words():
    spans = ex.word_spans([" the", " im", "mun", "ology", " of", "##fice", ",", " cats"])
    assert [t for _, _, t in spans] == ["the", "immunology", "office", ",", "cats"]
    assert spans[1][:2] == (1, 4)


def test_a_feature_that_fires_on_one_word_is_named_by_it():
    examples = _planted_word(" lazy")
    focus = ex.read_focus(examples)
    assert focus.kind == "token" and focus.token == "lazy" and focus.share == pytest.approx(1.0)
    c = ex.candidates(examples)
    vectors = _vectors(c.phrases(), planted=["lazy"])
    text = ex.explain(c, vectors, _contexts(10), _contexts(10, along=False))
    assert text.startswith('the word "lazy"')


def test_a_stop_word_token_is_named_as_a_token():
    focus = ex.read_focus(_planted_word(" in"))
    assert focus.kind == "token"
    c = ex.candidates(_planted_word(" in"))
    assert ex.explain(c, _vectors(c.phrases()), _contexts(5), _contexts(5, along=False)).startswith('the token "in"')


def test_a_feature_on_a_word_piece_is_explained_as_the_piece_not_a_word_holding_it():
    hosts = [[" in", "fects"], [" in", "voke"], [" in", "side"], [" in", "field"], [" in", "fects"]]
    examples = []
    for i, host in enumerate(hosts):
        tokens = FILLER[:3] + host + FILLER[3:6]
        examples.append(_example(tokens, 3, value=1.0 + i))
    focus = ex.read_focus(examples)
    assert (focus.kind, focus.token, focus.role) == ("piece", "in", "start")
    assert set(focus.hosts) == {"infects", "invoke", "inside", "infield"}
    c = ex.candidates(examples)
    text = ex.explain(c, _vectors(c.phrases(), planted=["infects"]), _contexts(5), _contexts(5, along=False))
    assert text.startswith('the word piece "in" at the start of words')
    assert not text.startswith(("infects", "invoke", "inside", "infield"))


def test_a_word_the_feature_fires_on_throughout_is_shown_whole():
    examples = [_example([" the", " im", "mun", "ology", " lab"], 1, acts=[0, 2.0, 1.0, 1.0, 0], value=2.0)
                for _ in range(4)]
    focus = ex.read_focus(examples)
    assert focus.kind == "token" and focus.token == "immunology" and focus.role == "word"


def test_a_varied_feature_lists_the_words_that_tell_its_contexts_apart():
    words = [" paris", " lyon", " nice", " lille", " nantes", " dijon"]
    examples = [_example(FILLER[:4] + [w] + FILLER[4:8], 4, value=1.0) for w in words * 2]
    c = ex.candidates(examples)
    assert ex.read_focus(examples).kind == "words"
    vectors = _vectors(c.phrases(), planted=["lyon"])
    text = ex.explain(c, vectors, _contexts(12), _contexts(12, along=False))
    assert re.split(r", | in phrases", text)[0] == "lyon"


def test_select_takes_the_phrase_aligned_with_the_activating_contexts_first():
    rng = np.random.default_rng(0)
    vecs = np.stack([_unit(rng.normal(size=16)) for _ in range(6)] + [_unit(np.eye(16)[0])]).astype(np.float32)
    pos, neg = _contexts(20, dim=16), _contexts(20, dim=16, along=False)
    picked = ex.select(vecs, pos, neg, k=3)
    assert picked[0] == 6 and len(set(picked)) == len(picked) <= 3


def test_document_frequency_weighs_words_around_every_feature_least():
    common = [_example([" genus", " of", w, " plants"], 2) for w in (" rose", " fern")]
    rare = [_example([" a", " tulip", " bulb", " grows"], 2)]
    idf = ex.document_frequency([common[:1], common[1:], rare])
    assert idf["genus"] < idf["tulip"]


def test_explanations_are_cut_to_a_short_line():
    words = [f" word{i}verylongtokenname" for i in range(20)]
    examples = [_example([w] * 3, 1) for w in words]
    c = ex.candidates(examples)
    text = ex.explain(c, _vectors(c.phrases()), _contexts(5), _contexts(5, along=False), max_words=8)
    assert len(text) <= ex.MAX_CHARS
