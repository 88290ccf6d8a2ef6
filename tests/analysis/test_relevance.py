"""Query relevance: misspellings corrected to the atlas's own words, literal matches weighted by field, and meaning
and literal matches combined into one ranking."""

import numpy as np

from atlas.analysis import relevance as rel


def test_a_misspelt_word_is_corrected_to_the_closest_atlas_word():
    vocab = {"immunology", "immune", "infection", "city", "ergodicity", "france"}
    assert rel.closest_word("immunolgy", vocab) == "immunology"
    assert rel.closest_word("frnace", vocab) == "france"
    assert rel.closest_word("zzzz", vocab) is None
    fixed, fixes = rel.correct("The immunolgy of France", vocab)
    assert fixed == "The immunology of France" and fixes == {"immunolgy": "immunology"}
    assert rel.correct("city", vocab) == ("city", {})
    assert rel.edit_distance("frnace", "france") == 1 and rel.edit_distance("immunolgy", "immunology") == 1
    assert rel.edit_distance("kitten", "sitting") == 3


def test_whole_word_matches_in_the_label_count_most():
    fields = [[("label", "ergodicity · chaos")], [("label", "city · town")], [("cluster", "city")],
              [("explanation", "cities of france")]]
    scores, why = rel.literal_scores(["city"], fields)
    assert scores.argmax() == 1 and scores[1] > scores[2] > 0 and scores[1] > scores[0] > 0
    assert why[1] == "label" and scores[3] == 0
    both, _ = rel.literal_scores(["city", "france"], [[("label", "city")], [("label", "city"), ("explanation", "france")]])
    assert both[1] > both[0]


def test_meaning_and_literal_matches_combine():
    score = rel.relevance(np.array([0.6, 0.5, np.nan]), np.array([0.0, 1.0, 1.0]))
    assert score[1] > score[0] and score[2] == rel.LITERAL_BONUS
