"""Decode and prefill speed of Hugging Face transformers (PyTorch, CPU) on a GPT-2 model
directory, in the conditions of `cargo xtask bench`: greedy, a 32-token prompt then 128 new
tokens with the KV cache, and a 512-token prefill. Decode is measured two ways: a bare loop
of forward calls with the cache (`decode`: 128 / time of the 128 steps, the model alone) and
`model.generate(..., max_new_tokens=128)` (`generate`: 128 / (its time − the 32-token
prefill's), what a user of the library runs).

    pip install torch transformers
    python tools/hf_transformers_bench.py --model target/bench-models/124M-random --threads 2

Prints one line per repetition and the medians.
"""
import argparse
import statistics
import time

import torch
from transformers import GPT2LMHeadModel

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", required=True, help="a Hugging Face GPT-2 directory (f32)")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--reps", type=int, default=3)
parser.add_argument("--prompt-tokens", type=int, default=32)
parser.add_argument("--new-tokens", type=int, default=128)
parser.add_argument("--prefill-tokens", type=int, default=512)
args = parser.parse_args()

torch.set_num_threads(args.threads)
model = GPT2LMHeadModel.from_pretrained(args.model, torch_dtype=torch.float32).eval()
n_vocab = model.config.vocab_size


def ids(n):
    # The same prompt as `cargo xtask bench` (`prompt_ids`).
    return torch.tensor([[(i * 7919 + 1) % n_vocab for i in range(n)]])


decode, generate, prefill = [], [], []
with torch.inference_mode():
    for rep in range(args.reps):
        out = model(ids(args.prompt_tokens), use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        t = time.perf_counter()
        for _ in range(args.new_tokens):
            out = model(nxt, past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
        decode.append(args.new_tokens / (time.perf_counter() - t))
        t = time.perf_counter()
        model(ids(args.prompt_tokens), use_cache=True)
        first = time.perf_counter() - t
        t = time.perf_counter()
        out = model.generate(
            ids(args.prompt_tokens),
            attention_mask=torch.ones(1, args.prompt_tokens, dtype=torch.long),
            do_sample=False,
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            pad_token_id=0,
        )
        assert out.shape[1] == args.prompt_tokens + args.new_tokens
        generate.append(args.new_tokens / (time.perf_counter() - t - first))
        t = time.perf_counter()
        model(ids(args.prefill_tokens), use_cache=True)
        prefill.append(args.prefill_tokens / (time.perf_counter() - t))
        print(
            f"rep {rep + 1}: decode {decode[-1]:.1f} tok/s, generate {generate[-1]:.1f} tok/s, "
            f"prefill {prefill[-1]:.0f} tok/s"
        )
print(
    f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
    f"{args.threads} threads: decode {statistics.median(decode):.1f} tok/s, "
    f"generate {statistics.median(generate):.1f} tok/s, "
    f"prefill {statistics.median(prefill):.0f} tok/s (medians of {args.reps})"
)
