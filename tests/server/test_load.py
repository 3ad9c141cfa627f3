"""A bounded load test: 32 concurrent streaming clients, 200 requests in all,
mixed prompt lengths, some clients hanging up mid-stream. No request fails,
no KV block leaks, and every completed temperature-0 reply is byte-identical
to the same request run alone (batch invariance)."""

import concurrent.futures as cf

CLIENTS = 32
REQUESTS = 200
MAX_TOKENS = 8
WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars shine above "
    "an old stone bridge near the quiet river"
).split()


def prompt(i: int) -> list[dict]:
    # 20 distinct conversations from 3 to ~250 words, sharing a system prompt
    # (prefix-cache hits) and some sharing a longer first turn.
    n = 3 + (i * 53) % 250
    words = " ".join(WORDS[(i + j * 3) % len(WORDS)] for j in range(n))
    messages = [{"role": "system", "content": "You are a helpful assistant who answers briefly."}]
    if i % 4 == 0:
        messages.append({"role": "user", "content": "Here is some text: " + " ".join(WORDS * 4)})
        messages.append({"role": "assistant", "content": "Thanks, I have read it."})
    messages.append({"role": "user", "content": f"Repeat after me: {words}"})
    return messages


DISTINCT = 20


def stream_text(client, model, messages, hang_up: bool, max_tokens: int = MAX_TOKENS):
    stream = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=max_tokens, stream=True
    )
    text, finish = "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
        if hang_up:
            stream.close()
            return None
    return text, finish


def test_32_clients_200_requests_deterministic_and_leak_free(server, client):
    model = server.model_id
    alone = {}
    for i in range(DISTINCT):
        alone[i] = stream_text(client, model, prompt(i), hang_up=False)
    before = server.wait_idle()

    def job(k: int):
        i = k % DISTINCT
        hang_up = k % 9 == 4
        # Hanging-up clients ask for more tokens, so they are cut mid-stream.
        got = stream_text(client, model, prompt(i), hang_up, max_tokens=64 if hang_up else MAX_TOKENS)
        return k, i, got

    completed = 0
    with cf.ThreadPoolExecutor(CLIENTS) as pool:
        for k, i, got in pool.map(job, range(REQUESTS)):
            if got is None:
                continue
            completed += 1
            assert got == alone[i], f"request {k} (prompt {i}) differs from its solo run"
    assert completed == REQUESTS - len([k for k in range(REQUESTS) if k % 9 == 4])

    m = server.wait_idle()
    assert m["smelt_kv_blocks_in_use"] == 0
    assert m["smelt_kv_blocks_free"] + m["smelt_kv_blocks_cached"] == m["smelt_kv_blocks_total"]
    assert m["smelt_kv_blocks_cached"] == m["smelt_kv_blocks_cached_idle"]
    assert m["smelt_cancelled_total"] > before["smelt_cancelled_total"]
    assert m["smelt_prefix_cache_hit_tokens_total"] > before["smelt_prefix_cache_hit_tokens_total"]
    assert 0 < m["smelt_prefix_cache_hit_rate"] <= 1
