"""Fixtures: a `gpt2 serve` process on the committed fixture model, and clients for it.

The binary is $GPT2_BIN, else target/debug/gpt2 (built by `cargo test --workspace`).
"""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from openai import OpenAI

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "fixtures" / "tiny" / "hf"
BIN = Path(os.environ.get("GPT2_BIN", ROOT / "target" / "debug" / "gpt2"))
API_KEY = "sk-test-key"


class Server:
    def __init__(self, *extra: str):
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "-m", str(MODEL), "--port", "0", "--served-model-name", "tiny", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        assert line.startswith("listening on http://"), line
        self.url = line.removeprefix("listening on ")
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(self.url + "/health") as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            assert time.time() < deadline, "never healthy"
            time.sleep(0.05)

    def get(self, path: str, headers=None):
        req = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path: str, body, headers=None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> str:
        return self.get("/metrics", {"Authorization": f"Bearer {API_KEY}"})[1]

    def stop(self):
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="session")
def server():
    s = Server("--api-key", API_KEY, "--parallel", "8")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(server):
    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def gpt2(*args: str) -> str:
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True, check=True)
    return out.stdout


def cli_greedy(prompt: str, n: int) -> str:
    return json.loads(gpt2("generate", "-m", str(MODEL), "--greedy", "-n", str(n), "--format", "json", prompt))["text"]


def cli_scores(text: str):
    return [t["logprob"] for t in json.loads(gpt2("score", "-m", str(MODEL), "--format", "json", text))["tokens"]]
