"""lm-evaluation-harness (`--model local-completions`, the server's tokenizer through
/tokenizer_info + /tokenize) runs a small local multiple-choice task against `gpt2 serve`, and
every log-likelihood it gets equals `gpt2 score`'s for the same tokens."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from conftest import MODEL, ROOT, Server, gpt2

pytest.importorskip("lm_eval")


def tokenize(server, text):
    _, body = server.post("/tokenize", {"prompt": text})
    return json.loads(body)["tokens"]


def test_lm_eval_loglikelihoods_are_gpt2_scores(tmp_path):
    server = Server()
    try:
        out = tmp_path / "out"
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        subprocess.run(
            [
                sys.executable, "-m", "lm_eval",
                "--model", "local-completions",
                "--model_args",
                f"base_url={server.url}/v1/completions,model=tiny,tokenizer_backend=remote,"
                "max_length=31,num_concurrent=2,max_retries=1",
                "--tasks", "gpt2rs_tiny",
                "--include_path", str(ROOT / "tests" / "server" / "lm_eval"),
                "--output_path", str(out),
                "--log_samples",
            ],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=600,
        )
        samples = [json.loads(line) for f in out.rglob("samples_*.jsonl") for line in f.read_text().splitlines()]
        assert len(samples) == 4
        checked = 0
        for s in samples:
            for args, resp in zip(s["arguments"].values(), s["filtered_resps"]):
                ctx, cont = tokenize(server, args["arg_0"]), tokenize(server, args["arg_1"])
                ids = ",".join(map(str, ctx + cont))
                scores = json.loads(gpt2("score", "-m", str(MODEL), "--format", "json", "--ids", ids))
                want = sum(t["logprob"] for t in scores["tokens"][len(ctx):])
                assert abs(float(resp[0]) - want) <= 1e-4 * len(cont), (args, resp, want)
                checked += 1
        assert checked == 10
    finally:
        assert server.stop() == 0
