"""The chat endpoint client against a fake local server: a retry after a 500, the prompt cache (a rebuild never
asks twice), the request budget, a refused key stopping all requests, and model output cleaned as untrusted."""

import pytest

from atlas.errors import ConfigError
from atlas.meaning.endpoint import ChatClient, EndpointSettings
from atlas.meaning.prompts import (balanced_accuracy, clean_text, explanation_prompt, judge_prompt, marked,
                                   parse_explanation, parse_flags)
from fake_chat import FakeChat


def _chat(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def _client(fake: FakeChat, tmp_path, **kw) -> ChatClient:
    settings = EndpointSettings(fake.base_url, "tiny-model", concurrency=kw.pop("concurrency", 2), timeout_s=5,
                                backoff_s=0.0, **kw)
    return ChatClient(settings, tmp_path / "cache", sleep=lambda s: None)


def test_a_500_is_retried_and_the_answer_cached_so_a_rebuild_never_asks_again(tmp_path):
    with FakeChat(lambda m: "Explanation: " + m[-1]["content"], fail=[500]) as fake:
        first = _client(fake, tmp_path).ask_all([_chat(1), _chat(2)])
        assert first == ["Explanation: question 1", "Explanation: question 2"]
        assert len(fake.requests) == 3  # one retried
        again = _client(fake, tmp_path)
        assert again.ask_all([_chat(2), _chat(1)]) == ["Explanation: question 2", "Explanation: question 1"]
        assert len(fake.requests) == 3 and again.stats.cached == 2 and again.stats.requests == 0
    assert all(r["model"] == "tiny-model" and r["temperature"] == 0.0 for r in fake.requests)


def test_the_request_budget_leaves_the_end_of_the_list_for_the_next_build(tmp_path):
    with FakeChat(lambda m: "ok") as fake:
        client = _client(fake, tmp_path, concurrency=1, max_requests=2)
        answers = client.ask_all([_chat(i) for i in range(5)])
        assert answers[:2] == ["ok", "ok"] and answers[2:] == [None, None, None]
        assert client.stats.skipped == 3 and len(fake.requests) == 2
        resumed = _client(fake, tmp_path, concurrency=1, max_requests=2)
        assert resumed.ask_all([_chat(i) for i in range(5)])[:4] == ["ok"] * 4
        assert resumed.stats.cached == 2 and len(fake.requests) == 4


def test_retries_stop_after_max_retries_and_the_failure_is_reported(tmp_path):
    with FakeChat(lambda m: "never", fail=[503] * 10) as fake:
        client = _client(fake, tmp_path, max_retries=2)
        assert client.ask(_chat(0)) is None
        assert len(fake.requests) == 3 and client.stats.failed == 1 and "HTTP 503" in client.stats.errors[0]


def test_a_refused_key_stops_every_request_and_the_key_is_sent_as_a_bearer_token(tmp_path):
    with FakeChat(lambda m: "no", fail=[401]) as fake:
        client = _client(fake, tmp_path, api_key="sekret", concurrency=1)
        assert client.ask_all([_chat(i) for i in range(4)]) == [None] * 4
        assert len(fake.requests) == 1 and fake.auth == ["Bearer sekret"]
        assert "api_key_env" in client.fatal


def test_a_missing_key_variable_is_a_config_error_that_names_it():
    class Section:
        base_url, model, api_key_env = "http://127.0.0.1:9/v1", "m", "ATLAS_TEST_NO_SUCH_KEY"
        concurrency, max_retries, timeout_s, budget_s, max_requests = 1, 0, 1.0, 0.0, 0

    with pytest.raises(ConfigError, match="ATLAS_TEST_NO_SUCH_KEY"):
        EndpointSettings.from_config(Section(), environ={})


def test_model_output_is_untrusted_text():
    evil = "Explanation: <script>alert(1)</script>\x07\x1b[31m words\u202e about\u200b cities " + "x" * 400
    text = parse_explanation("Sure! Here it is.\n" + evil)
    assert text.startswith("<script>alert(1)</script>") and len(text) <= 200
    assert not any(ch in text for ch in "\x07\x1b\u202e\u200b\n")
    assert parse_explanation('Explanation: "names of French cities"') == "names of French cities"
    assert parse_explanation(None) == "" and clean_text(" a \n\t b ") == "a b"


def test_prompts_mark_the_firing_tokens_and_judges_answers_are_read():
    assert marked([" the", " immune", " system", " works"], [0, 1.0, 2.0, 0]) == "the <<immune system>> works"
    chat = explanation_prompt(["the <<fox>>"], promoted=["dog"], suppressed=["cat"])
    assert "<<fox>>" in chat[-1]["content"] and "'dog'" in chat[-1]["content"]
    assert "1. a" in judge_prompt("detection", "foxes", ["a", "b"])[-1]["content"]
    assert parse_flags("Answer: [1, 0, 1]", 3) == [1, 0, 1]
    assert parse_flags("1 0 1 1", 3) == [1, 0, 1] and parse_flags("[1, 0]", 3) is None
    assert balanced_accuracy([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx((1 + 2 / 3) / 2)
