#!/usr/bin/env python3
"""Make the training reference fixture, fixtures/tiny/train/, with PyTorch.

    python3 -m venv .venv && .venv/bin/pip install -r tools/requirements-fixtures.txt
    .venv/bin/python tools/make_train_reference.py

What `gpt2 train` must reproduce, computed by Hugging Face `transformers` (GPT2LMHeadModel, dropout 0,
f32) and `torch.optim.AdamW` on the committed fixture model fixtures/tiny/hf (n_layer 2, n_embd 40,
n_head 5, n_ctx 32, vocab 50257), the way llm.c's test_gpt2.c checks its trainer against PyTorch:

- `ids`: the training tokens (a seeded, Zipf-like draw over the vocabulary), one stream;
- one batch (the first B=4 windows of T=16 + 1 tokens, targets shifted by one): the loss, some logits
  (every position, the first 256 vocabulary entries) and their log-sum-exp, and the gradient of every
  parameter tensor (`wte` only at the rows in `wte_rows`: the full table is 8 MB);
- 10 steps of nanoGPT's recipe, batches as `gpt2 train --data-order sequential` takes them (step s,
  micro-step k takes windows (s*K+k)*B .. +B-1 modulo the number of windows), B=2, T=16, grad-accum
  K=2: loss/K accumulated over the K micro-steps, clip_grad_norm_ to 2.5 (active in steps 0-4 and 6), AdamW (betas 0.9/0.95,
  eps 1e-8, weight decay 0.1 on wte, wpe and the Conv1D weights only), nanoGPT's get_lr (lr 6e-3,
  min_lr 6e-4, warm-up 3 steps, cosine decay to step 10): every step's loss, lr and grad norm
  (before clipping), and the parameters after the last step (`wte` at `wte_rows`).

Writes `reference.json` (settings, ids, per-step numbers, versions) and `reference.safetensors`.
Deterministic for fixed library versions (recorded in reference.json).
"""

import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "fixtures", "tiny", "hf")
OUT = os.path.join(ROOT, "fixtures", "tiny", "train")

N_TOKENS = 400
GRAD_B, GRAD_T = 4, 16
STEPS, B, T, K = 10, 2, 16, 2
LR, MIN_LR, WARMUP = 6e-3, 6e-4, 3
WD, BETAS, EPS, CLIP = 0.1, (0.9, 0.95), 1e-8, 2.5


def load_model():
    model = GPT2LMHeadModel.from_pretrained(
        MODEL, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, torch_dtype=torch.float32
    )
    model.train()  # dropout is 0: train mode changes nothing else in GPT-2
    return model


def canonical(name):
    """HF parameter name -> this project's canonical name (no `transformer.` prefix)."""
    return name[len("transformer."):] if name.startswith("transformer.") else name


def windows(ids, t):
    n = (len(ids) - 1) // t
    return [ids[r * t: r * t + t + 1] for r in range(n)]


def batch(wins, first, b):
    rows = [wins[(first + j) % len(wins)] for j in range(b)]
    x = torch.tensor([r[:-1] for r in rows], dtype=torch.long)
    y = torch.tensor([r[1:] for r in rows], dtype=torch.long)
    return x, y


def loss_of(model, x, y):
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    return loss, logits


def get_lr(it):
    """nanoGPT's train.py get_lr, lr_decay_iters = STEPS."""
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    if it > STEPS:
        return MIN_LR
    ratio = (it - WARMUP) / (STEPS - WARMUP)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return MIN_LR + coeff * (LR - MIN_LR)


def decays(name):
    """Weight decay on wte, wpe and the Conv1D weights (the >= 2-D parameters), as nanoGPT."""
    return name.endswith(".weight") and (
        name in ("wte.weight", "wpe.weight")
        or any(m in name for m in (".c_attn.", ".c_proj.", ".c_fc."))
    )


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(1234)
    # Zipf-like ids: a learnable distribution (the loss falls), every id in range.
    ids = (rng.zipf(1.3, size=N_TOKENS) - 1) % 50257
    ids = [int(i) for i in ids]
    tensors = {}

    # --- one batch: loss, logits, gradients ---
    model = load_model()
    wins = windows(ids, GRAD_T)
    x, y = batch(wins, 0, GRAD_B)
    loss, logits = loss_of(model, x, y)
    loss.backward()
    present = sorted(set(int(i) for i in x.flatten().tolist()) | set(int(i) for i in y.flatten().tolist()))
    extra = sorted(set(range(16)) | set(range(50257 - 16, 50257)) | set(int(i) for i in rng.choice(50257, 64, replace=False)))
    wte_rows = sorted(set(present) | set(extra))
    rows_t = torch.tensor(wte_rows, dtype=torch.long)
    tensors["logits_head"] = logits[..., :256].detach().numpy().astype(np.float32)
    tensors["logits_logsumexp"] = torch.logsumexp(logits.detach(), dim=-1).numpy().astype(np.float32)
    grad_norms = {}
    for name, p in model.named_parameters():
        c = canonical(name)
        g = p.grad.detach()
        grad_norms[c] = float(g.double().norm())
        if c == "wte.weight":
            g = g[rows_t]
        tensors[f"grad.{c}"] = g.numpy().astype(np.float32).copy()
    one_batch = {"batch_size": GRAD_B, "seq_len": GRAD_T, "loss": float(loss.detach()), "grad_norms": grad_norms}

    # --- 10 steps of the recipe ---
    model = load_model()
    wins = windows(ids, T)
    named = [(canonical(n), p) for n, p in model.named_parameters()]
    groups = [
        {"params": [p for n, p in named if decays(n)], "weight_decay": WD},
        {"params": [p for n, p in named if not decays(n)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, foreach=False, fused=False)
    steps = []
    for s in range(STEPS):
        lr = get_lr(s)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        micro = []
        for k in range(K):
            x, y = batch(wins, (s * K + k) * B, B)
            loss, _ = loss_of(model, x, y)
            (loss / K).backward()
            micro.append(float(loss))
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP))
        opt.step()
        steps.append({"step": s, "loss": sum(micro) / K, "micro_losses": micro, "lr": lr, "grad_norm": norm,
                      "clipped": norm > CLIP})
        print(f"step {s}: loss {steps[-1]['loss']:.6f} lr {lr:.3e} norm {norm:.4f}", file=sys.stderr)
    if not any(st["clipped"] for st in steps) or all(st["clipped"] for st in steps):
        raise SystemExit("clipping must be active in some steps, not all: change CLIP")
    for n, p in named:
        v = p.detach()
        if n == "wte.weight":
            v = v[rows_t]
        tensors[f"final.{n}"] = v.numpy().astype(np.float32).copy()

    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "reference.safetensors"))
    ref = {
        "model": "fixtures/tiny/hf",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__},
        "ids": ids,
        "wte_rows": wte_rows,
        "one_batch": one_batch,
        "recipe": {"steps": STEPS, "batch_size": B, "seq_len": T, "grad_accum": K, "lr": LR,
                   "min_lr": MIN_LR, "warmup_steps": WARMUP, "weight_decay": WD, "beta1": BETAS[0],
                   "beta2": BETAS[1], "eps": EPS, "grad_clip": CLIP, "data_order": "sequential"},
        "steps": steps,
    }
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
