"""`gpt2 serve` through the official openai client: answers equal the CLI's, streaming equals
one answer, n/seed, stop, echo/logprobs = `gpt2 score`, several prompts, errors, auth,
cancellation, and 64 concurrent streaming clients."""

import concurrent.futures
import json
import re
import socket
import time

import openai
import pytest

from conftest import API_KEY, cli_greedy, cli_scores

PROMPTS = ["Hello there", "The quick brown fox jumps", "a", "Once upon a time, in a land"]


@pytest.mark.parametrize("prompt,n", list(zip(PROMPTS, [5, 9, 3, 7])))
def test_greedy_is_the_cli(client, prompt, n):
    r = client.completions.create(model="tiny", prompt=prompt, max_tokens=n, temperature=0)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.choices[0].text == cli_greedy(prompt, n)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_equals_one_answer(client):
    kw = dict(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0)
    whole = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_n_and_seed(client):
    kw = dict(model="tiny", prompt="The sea", max_tokens=8, temperature=1.0, n=3, seed=1234)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert len({c.text for c in a.choices}) > 1  # three different samples


def test_several_prompts(client):
    r = client.completions.create(model="tiny", prompt=PROMPTS[:2], max_tokens=4, temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for c in r.choices:
        assert c.text == cli_greedy(PROMPTS[c.index // 2], 4)
    ids = client.completions.create(model="tiny", prompt=[[15496, 612]], max_tokens=5, temperature=0)
    assert ids.choices[0].text == cli_greedy("Hello there", 5)


def test_stop(client):
    full = cli_greedy("Hello there", 10)
    stop = full[3:5]
    r = client.completions.create(model="tiny", prompt="Hello there", max_tokens=10, temperature=0, stop=[stop])
    assert r.choices[0].text == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_echo_logprobs_are_gpt2_scores(client):
    text = "The capital of France is Paris"
    r = client.completions.create(model="tiny", prompt=text, max_tokens=0, echo=True, logprobs=1)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text
    want = cli_scores(text)
    assert lp.token_logprobs[0] is None and want[0] is None
    assert len(lp.token_logprobs) == len(want)
    for g, w in zip(lp.token_logprobs[1:], want[1:]):
        assert abs(g - w) <= 1e-4
    assert "".join(lp.tokens) == text
    assert lp.text_offset[0] == 0


def test_generated_logprobs(client):
    r = client.completions.create(model="tiny", prompt="Hi", max_tokens=4, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    for tok, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert p <= 0 and len(top) >= 3
        assert max(top.values()) == pytest.approx(p)  # greedy: the chosen one is the most likely


@pytest.mark.parametrize(
    "kw,param",
    [
        (dict(temperature=3), "temperature"),
        (dict(top_p=1.5), "top_p"),
        (dict(n=0), "n"),
        (dict(logprobs=6), "logprobs"),
        (dict(max_tokens=1000), "max_tokens"),
        (dict(suffix="x"), "suffix"),
        (dict(presence_penalty=5), "presence_penalty"),
        (dict(logit_bias={"x": 1}), "logit_bias"),
        (dict(n=2, best_of=1), "best_of"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="a", **kw)
    body = e.value.body
    assert body["param"] == param, body
    assert param in body["message"]


def test_other_errors(server, client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt="a")
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt=[[1, 50257]])
    assert "50257" in e.value.body["message"]
    auth = {"Authorization": f"Bearer {API_KEY}"}
    status, body = server.post("/v1/completions", b"{not json", auth)
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]["message"]
    status, body = server.post("/v1/completions", {"prompt": "a" * (2 << 20)}, auth)
    assert status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, body = server.get("/v1/completions", auth)
    assert status == 405
    status, body = server.get("/nope", auth)
    assert status == 404 and "error" in json.loads(body)


def test_auth(server):
    assert server.get("/health")[0] == 200
    assert server.get("/v1/models")[0] == 401
    assert server.get("/v1/models", {"Authorization": "Bearer wrong"})[0] == 401
    assert server.get("/v1/models", {"X-Api-Key": API_KEY})[0] == 200
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="a")
    status, body = server.post("/tokenize", {"content": "Hello world"}, {"X-Api-Key": API_KEY})
    assert json.loads(body)["tokens"] == [15496, 995]
    status, body = server.post("/detokenize", {"tokens": [15496, 995]}, {"X-Api-Key": API_KEY})
    assert json.loads(body)["content"] == "Hello world"


def cancelled(server) -> int:
    m = re.search(r'gpt2_requests_total\{finish_reason="cancelled"\} (\d+)', server.metrics())
    return int(m.group(1)) if m else 0


def test_cancel_on_disconnect(server):
    before = cancelled(server)
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 30, "stream": True, "ignore_eos": True})
    with socket.create_connection((host, int(port))) as s:
        s.sendall(
            (
                f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
            ).encode()
        )
        assert b"data:" in s.recv(4096) or True
    deadline = time.time() + 10
    while cancelled(server) == before:
        assert time.time() < deadline, server.metrics()
        time.sleep(0.05)
    assert "gpt2_requests_running 0" in server.metrics()


def test_64_concurrent_streaming_clients(client):
    want = {p: cli_greedy(p, n) for p, n in zip(PROMPTS, [5, 9, 3, 7])}

    def one(i):
        p = PROMPTS[i % 4]
        n = [5, 9, 3, 7][i % 4]
        chunks = client.completions.create(model="tiny", prompt=p, max_tokens=n, temperature=0, stream=True)
        return p, "".join(c.choices[0].text for c in chunks if c.choices)

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert len(results) == 64
    for p, text in results:
        assert text == want[p]
