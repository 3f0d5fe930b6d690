#!/usr/bin/env python3
"""PyTorch eager's training speed for `cargo xtask bench --train`: Hugging Face GPT2LMHeadModel
(random weights of a GPT-2 shape, dropout 0, f32) + torch.optim.AdamW, clip_grad_norm_,
torch.set_num_threads(N), on random token ids. Prints one JSON object:
{"ms_per_step", "tokens_per_s", "peak_rss_mib", "steps"} (the first step, a warm-up, not counted).

    .venv/bin/python tools/bench_train_torch.py --batch-size 4 --seq-len 64 --steps 5 --threads 2
"""

import argparse
import json
import resource
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=12)
    ap.add_argument("--n-embd", type=int, default=768)
    ap.add_argument("--n-head", type=int, default=12)
    ap.add_argument("--n-ctx", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head, n_positions=a.n_ctx,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(1)
    times = []
    for _ in range(a.steps + 1):
        ids = torch.randint(0, config.vocab_size, (a.batch_size, a.seq_len + 1), generator=g)
        t0 = time.perf_counter()
        logits = model(input_ids=ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    med = times[len(times) // 2]
    print(json.dumps({
        "ms_per_step": med * 1e3,
        "tokens_per_s": a.batch_size * a.seq_len / med,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "steps": a.steps,
    }))


if __name__ == "__main__":
    main()
