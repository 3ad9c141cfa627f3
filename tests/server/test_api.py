"""The OpenAI API of `smelt serve`, through the official openai client."""

import math

import openai
import pytest
import requests

from conftest import API_KEY

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_models_lists_the_served_model(server, client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [server.model_id]
    assert client.models.retrieve(server.model_id).id == server.model_id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_chat_answers_and_counts_usage(server, client):
    r = client.chat.completions.create(
        model=server.model_id, messages=QUESTION, temperature=0, max_tokens=30
    )
    assert r.object == "chat.completion"
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason == "stop"
    u = r.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    # The prompt is the ChatML rendering of the conversation (SmolLM2's
    # template adds its default system prompt).
    rendered = requests.post(
        server.url + "/tokenize",
        json={"content": "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"},
        headers=server.auth(),
        timeout=30,
    ).json()["tokens"]
    assert u.prompt_tokens > len(rendered)
    # The end-of-turn token is counted, not printed.
    assert u.completion_tokens >= len(
        requests.post(
            server.url + "/tokenize",
            json={"content": choice.message.content},
            headers=server.auth(),
            timeout=30,
        ).json()["tokens"]
    )


def test_streamed_chat_concatenates_to_the_full_reply(server, client):
    kw = dict(model=server.model_id, messages=QUESTION, temperature=0, max_tokens=30)
    full = client.chat.completions.create(**kw)
    chunks = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # The last chunk carries the usage and no choices.
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_stream_and_default_length(server, client):
    kw = dict(model=server.model_id, prompt="The capital of France is", temperature=0)
    full = client.completions.create(**kw)
    assert full.object == "text_completion"
    assert full.choices[0].text.startswith(" Paris.")
    # OpenAI's default max_tokens for completions is 16.
    assert full.choices[0].finish_reason == "length"
    assert full.usage.completion_tokens == 16
    streamed = list(client.completions.create(**kw, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == full.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"


def test_stop_strings_end_the_text_before_them(server, client):
    kw = dict(model=server.model_id, prompt="The capital of France is", temperature=0, max_tokens=16)
    r = client.completions.create(**kw, stop="ris.")
    assert r.choices[0].text == " Pa"
    assert r.choices[0].finish_reason == "stop"
    r = client.completions.create(**kw, stop=["zzz", " Par"])
    assert r.choices[0].text == ""
    streamed = list(client.completions.create(**kw, stop=["ris."], stream=True))
    assert "".join(c.choices[0].text for c in streamed) == " Pa"


def test_seed_reproduces_sampling(server, client):
    kw = dict(
        model=server.model_id,
        messages=[{"role": "user", "content": "Tell me a story about a cat."}],
        temperature=1.0,
        max_tokens=24,
    )
    a = client.chat.completions.create(**kw, seed=42).choices[0].message.content
    b = client.chat.completions.create(**kw, seed=42).choices[0].message.content
    c = client.chat.completions.create(**kw, seed=43).choices[0].message.content
    assert a == b
    assert a != c


def test_chat_logprobs_are_a_distribution(server, client):
    r = client.chat.completions.create(
        model=server.model_id,
        messages=QUESTION,
        temperature=0,
        max_tokens=8,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        tops = entry.top_logprobs
        assert len(tops) == 3
        values = [t.logprob for t in tops]
        assert values == sorted(values, reverse=True)
        assert sum(math.exp(v) for v in values) <= 1.0 + 1e-5
        # Greedy picks the likeliest token.
        assert entry.token == tops[0].token
        assert entry.logprob == pytest.approx(tops[0].logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token


def test_completion_logprobs_shape(server, client):
    r = client.completions.create(
        model=server.model_id, prompt="One, two, three,", temperature=0, max_tokens=5, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2
        assert logprob <= 0
        assert max(top.values()) == pytest.approx(logprob)


@pytest.mark.parametrize(
    "prompt",
    [
        "Translate to Japanese: good morning, my friend.",
        "Write three emoji that mean happiness:",
        "Écris une phrase en français avec des accents : «",
    ],
)
def test_unicode_streams_without_replacement_characters(server, client, prompt):
    kw = dict(model=server.model_id, messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=40)
    choice = client.chat.completions.create(**kw).choices[0]
    full = choice.message.content
    streamed = "".join(
        c.choices[0].delta.content or "" for c in client.chat.completions.create(**kw, stream=True) if c.choices
    )
    assert streamed == full
    # Characters split across tokens are whole in the stream; only a
    # character cut off by max_tokens ends as U+FFFD (as in `smelt run`).
    assert "\ufffd" not in full.rstrip("\ufffd")
    if full.endswith("\ufffd"):
        assert choice.finish_reason == "length"


def error_of(resp: requests.Response) -> dict:
    body = resp.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    return err


def test_bad_json_is_a_400_with_an_error_object(server):
    r = requests.post(
        server.url + "/v1/chat/completions",
        data=b'{"model": "x", "messages": [',
        headers={**server.auth(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400
    assert error_of(r)["type"] == "invalid_request_error"


def test_unknown_model_is_named(server, client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-9", messages=QUESTION)
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert "gpt-9" in e.value.message


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"temperature": 5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"n": 2}, "n"),
        ({"logprobs": True, "top_logprobs": 50}, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
def test_invalid_parameters_are_400_naming_the_parameter(server, client, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=server.model_id, messages=QUESTION, **extra)
    assert e.value.status_code == 400
    assert e.value.param == param


def test_prompt_over_the_context_names_the_limit(server, client):
    long_text = "word " * 600
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=server.model_id, messages=[{"role": "user", "content": long_text}]
        )
    assert e.value.code == "context_length_exceeded"
    assert "512" in e.value.message
    # A prompt that fits, but not with the completion asked for.
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=server.model_id, prompt="Hello", max_tokens=600)
    assert e.value.code == "context_length_exceeded"
    assert "600 in the completion" in e.value.message


def test_wrong_or_missing_api_key_is_401(server):
    bad = server.client(api_key="not-the-key")
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model=server.model_id, messages=QUESTION)
    assert e.value.status_code == 401
    r = requests.get(server.url + "/v1/models", timeout=30)
    assert r.status_code == 401
    assert error_of(r)["code"] == "invalid_api_key"
    # Health and metrics need no key.
    assert requests.get(server.url + "/health", timeout=30).json() == {"status": "ok"}
    assert requests.get(server.url + "/metrics", timeout=30).status_code == 200


def test_tokenize_detokenize_round_trip(server):
    text = "Hello, world! Grüße 👋"
    toks = requests.post(
        server.url + "/tokenize", json={"content": text}, headers=server.auth(), timeout=30
    ).json()["tokens"]
    assert toks and all(isinstance(t, int) for t in toks)
    back = requests.post(
        server.url + "/detokenize", json={"tokens": toks}, headers=server.auth(), timeout=30
    ).json()["content"]
    assert back == text


def test_unknown_url_is_404_json(server):
    r = requests.get(server.url + "/v1/nothing", headers=server.auth(), timeout=30)
    assert r.status_code == 404
    assert error_of(r)["code"] == "unknown_url"
