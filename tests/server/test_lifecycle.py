"""Admission and shutdown, each on a server of its own: a full queue gets 429
with Retry-After; SIGTERM lets running streams finish within the grace
period, cuts them after it, and the server exits 0."""

import threading
import time

import openai
import pytest
import requests

from conftest import Server

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def first_chunk_then(stream):
    """Iterates a stream: waits for its first chunk, returns the rest lazily."""
    it = iter(stream)
    first = next(it)
    return first, it


def wait_for(cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_full_queue_is_429_with_retry_after():
    s = Server("--parallel", "1", "--queue", "1", "--ctx", "512")
    try:
        c = s.client(api_key="unused")
        running = c.completions.create(
            model=s.model_id, prompt=COUNTING, temperature=0, max_tokens=400, stream=True
        )
        _, rest = first_chunk_then(running)
        queued_result = {}

        def queued():
            queued_result["r"] = c.completions.create(
                model=s.model_id, prompt="Hello", temperature=0, max_tokens=2
            )

        t = threading.Thread(target=queued)
        t.start()
        wait_for(lambda: s.metrics()["smelt_queue_depth"] >= 1)
        with pytest.raises(openai.RateLimitError) as e:
            c.completions.create(model=s.model_id, prompt="Hi", max_tokens=2)
        assert e.value.status_code == 429
        assert e.value.code == "rate_limit_exceeded"
        assert int(e.value.response.headers["retry-after"]) >= 1
        # Hanging up the running stream frees the slot for the queued request.
        running.close()
        t.join(120)
        assert queued_result["r"].usage.completion_tokens == 2
        m = s.wait_idle()
        assert m["smelt_kv_blocks_in_use"] == 0
        assert m["smelt_cancelled_total"] >= 1
    finally:
        assert s.stop() == 0


def test_sigterm_lets_running_streams_finish_then_exits_0():
    s = Server("--parallel", "2", "--shutdown-grace", "60")
    c = s.client(api_key="unused")
    stream = c.completions.create(
        model=s.model_id, prompt=COUNTING, temperature=0, max_tokens=48, stream=True
    )
    first, rest = first_chunk_then(stream)
    s.proc.send_signal(15)
    wait_for(lambda: any("shutting down" in line for line in s.log))
    # New requests are refused (connection closed, or 503 on a kept-alive one).
    try:
        r = requests.get(s.url + "/health", timeout=10)
        assert r.status_code == 503
    except requests.ConnectionError:
        pass
    chunks = [first, *rest]
    assert chunks[-1].choices[0].finish_reason == "length"
    text = "".join(ch.choices[0].text for ch in chunks)
    assert text.startswith(" 11, 12,")
    assert s.proc.wait(60) == 0


def test_sigterm_cuts_streams_after_the_grace_period():
    s = Server("--parallel", "2", "--shutdown-grace", "0.5")
    c = s.client(api_key="unused")
    stream = c.completions.create(
        model=s.model_id, prompt=COUNTING, temperature=0, max_tokens=480, stream=True
    )
    first, rest = first_chunk_then(stream)
    s.proc.send_signal(15)
    finishes = []
    try:
        for ch in rest:
            finishes.append(ch.choices[0].finish_reason)
    except (openai.APIError, requests.RequestException, Exception):
        pass
    # The stream was cut: it never finished with a reason.
    assert "length" not in finishes
    assert s.proc.wait(60) == 0


def test_kv_memory_smaller_than_one_sequence_is_refused_at_start():
    from conftest import binary, model_path
    import subprocess

    proc = subprocess.run(
        [binary(), "serve", model_path(), "--port", "0", "--ctx", "512", "--kv-memory", "1M"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "--kv-memory 1M" in proc.stderr
    assert "--ctx 512" in proc.stderr
