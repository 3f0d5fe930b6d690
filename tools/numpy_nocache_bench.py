#!/usr/bin/env python3
"""The homework notebook's approach, timed: GPT-2 in numpy with no key/value cache, so every new
token runs the whole sequence through the model again.

    python tools/numpy_nocache_bench.py --size 1558M --prompt-tokens 32 --new-tokens 3
    python tools/numpy_nocache_bench.py --check fixtures/tiny     # correctness vs the reference

Random weights of the requested shape (N(0, 0.02), layer norms at 1/0), float32, greedy decoding.
Prints seconds per generated token (median) and tokens/s. `--check DIR` loads DIR/hf/model.safetensors
and compares the logits at every position of every prompt with DIR/reference.safetensors
(the committed fixtures), so the forward pass below is known to be GPT-2's.

Threads: numpy's BLAS uses OPENBLAS_NUM_THREADS / OMP_NUM_THREADS (set them to 2 to compare
with `gpt2 generate --threads 2`).
"""
import argparse
import json
import statistics
import struct
import sys
import time

import numpy as np

SHAPES = {  # n_embd, n_head, n_layer
    "124M": (768, 12, 12),
    "355M": (1024, 16, 24),
    "774M": (1280, 20, 36),
    "1558M": (1600, 25, 48),
}
N_VOCAB, N_CTX = 50257, 1024


def read_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=np.float32).reshape(info["shape"])
    return out


def layer_norm(x, g, b, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * g + b


def gelu(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def forward(w, ids, n_head, n_layer):
    """Logits [len(ids), n_vocab] for the whole sequence (no cache)."""
    s = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][:s]
    mask = np.triu(np.full((s, s), -1e10, dtype=np.float32), 1)
    for i in range(n_layer):
        p = f"h.{i}."
        a = layer_norm(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = []
        for h in np.split(np.arange(q.shape[-1]), n_head):
            att = softmax(q[:, h] @ k[:, h].T / np.sqrt(len(h)) + mask)
            heads.append(att @ v[:, h])
        x = x + np.hstack(heads) @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = layer_norm(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        m = gelu(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        x = x + m @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"])
    return x @ w["wte.weight"].T


def random_weights(n_embd, n_layer, seed=0):
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    w = {"wte.weight": normal(N_VOCAB, n_embd), "wpe.weight": normal(N_CTX, n_embd)}
    for i in range(n_layer):
        p = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[p + ln + ".weight"] = np.ones(n_embd, np.float32)
            w[p + ln + ".bias"] = np.zeros(n_embd, np.float32)
        for name, (a, b) in {
            "attn.c_attn": (n_embd, 3 * n_embd),
            "attn.c_proj": (n_embd, n_embd),
            "mlp.c_fc": (n_embd, 4 * n_embd),
            "mlp.c_proj": (4 * n_embd, n_embd),
        }.items():
            w[p + name + ".weight"] = normal(a, b)
            w[p + name + ".bias"] = normal(b)
    w["ln_f.weight"] = np.ones(n_embd, np.float32)
    w["ln_f.bias"] = np.zeros(n_embd, np.float32)
    return w


def check(fixture_dir):
    ref = json.load(open(f"{fixture_dir}/reference.json"))
    hp = ref["model"]["hparams"]
    w = read_safetensors(f"{fixture_dir}/hf/model.safetensors")
    # HF names may carry a "transformer." prefix.
    w = {k.removeprefix("transformer."): v for k, v in w.items()}
    tensors = read_safetensors(f"{fixture_dir}/reference.safetensors")
    worst = 0.0
    for p in ref["prompts"]:
        got = forward(w, np.array(p["ids"]), hp["n_head"], hp["n_layer"])
        worst = max(worst, float(np.abs(got - tensors[p["logits_tensor"]]).max()))
    print(f"{fixture_dir}: max |logit diff| vs reference = {worst:.2e} over {len(ref['prompts'])} prompts")
    return worst < 1e-3


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="124M", choices=SHAPES)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=3)
    ap.add_argument("--check", metavar="FIXTURE_DIR")
    args = ap.parse_args()
    if args.check:
        sys.exit(0 if check(args.check) else 1)
    n_embd, n_head, n_layer = SHAPES[args.size]
    t = time.time()
    w = random_weights(n_embd, n_layer)
    print(f"{args.size}: random weights in {time.time() - t:.1f} s", file=sys.stderr)
    ids = [(i * 7919 + 1) % N_VOCAB for i in range(args.prompt_tokens)]
    times = []
    for _ in range(args.new_tokens):
        t = time.time()
        logits = forward(w, np.array(ids), n_head, n_layer)
        ids.append(int(logits[-1].argmax()))
        times.append(time.time() - t)
    med = statistics.median(times)
    print(
        f"numpy no-cache {args.size}: {args.prompt_tokens}-token prompt, {args.new_tokens} tokens, "
        f"median {med:.2f} s/token ({1 / med:.3f} tok/s); per token: "
        + ", ".join(f"{x:.2f}" for x in times)
    )


if __name__ == "__main__":
    main()
