"""Fixtures for the server tests: a live `smelt serve` on loopback and clients.

Run through scripts/server-tests.sh, which builds the binary, makes the venv
(pinned openai, pytest, requests) and sets SMELT_BIN and SMELT_MODEL.
"""

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

API_KEY = "smelt-test-key"
ROOT = Path(__file__).resolve().parents[2]


def model_path() -> str:
    if os.environ.get("SMELT_MODEL"):
        return os.environ["SMELT_MODEL"]
    assets = os.environ.get("SMELT_ASSETS", os.path.expanduser("~/.cache/smelt/assets"))
    path = os.path.join(assets, "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: run scripts/fetch-assets.sh")
    return path


def binary() -> str:
    path = os.environ.get("SMELT_BIN", str(ROOT / "target" / "debug" / "smelt"))
    if not os.path.exists(path):
        pytest.fail(f"{path} is missing: build it (scripts/server-tests.sh does)")
    return path


class Server:
    """A `smelt serve` process on a free loopback port."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [binary(), "serve", model_path(), "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        self.url = None
        ready = threading.Event()

        def read_log():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on (http://\S+)", line)
                if m:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not ready.wait(120) or self.url is None:
            self.proc.kill()
            raise RuntimeError("smelt serve did not start:\n" + "".join(self.log))
        self.model_id = requests.get(self.url + "/v1/models", headers=self.auth(), timeout=30).json()[
            "data"
        ][0]["id"]

    def auth(self) -> dict:
        return {"Authorization": f"Bearer {API_KEY}"}

    def client(self, **kw) -> openai.OpenAI:
        kw.setdefault("api_key", API_KEY)
        return openai.OpenAI(base_url=self.url + "/v1", max_retries=0, timeout=300, **kw)

    def metrics(self) -> dict:
        """The unlabelled samples of /metrics, by name."""
        text = requests.get(self.url + "/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def wait_idle(self, timeout: float = 60) -> dict:
        """Metrics once nothing runs or waits (bounded wait)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if m["smelt_running_sequences"] == 0 and m["smelt_queue_depth"] == 0:
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"server not idle after {timeout} s: {m}")
            time.sleep(0.1)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="session")
def server():
    """The shared server: 32 slots of 512 tokens, an API key."""
    s = Server("--parallel", "32", "--ctx", "512", "--api-key", API_KEY, "--queue", "256")
    yield s
    code = s.stop()
    assert code == 0, "".join(s.log)


@pytest.fixture(scope="session")
def client(server):
    return server.client()
