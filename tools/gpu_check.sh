#!/usr/bin/env bash
# A short check of a `--features cuda` build of `gpt2` on a machine with an NVIDIA GPU.
#
#   cargo build --release -p gpt2-cli --features cuda      # needs nvcc (CUDA_ROOT) at build time
#   tools/gpu_check.sh target/release/gpt2 [OUT_DIR]
#
# 1. logits of every fixtures/tiny reference prompt on the GPU (f32) against transformers'
#    reference (max abs diff, tolerance 1e-4), and f16 on the GPU against the same;
# 2. greedy generation on the GPU equals the reference continuation;
# 3. when Python with torch + transformers is there: a random model of the 124M shape, decode
#    speed on the GPU and on the CPU (`gpt2 generate --stats`).
set -uo pipefail
bin=${1:?usage: tools/gpu_check.sh PATH/TO/gpt2 [OUT_DIR]}
out=${2:-${OUT:-/tmp/gpu-check}}
mkdir -p "$out"
cd "$(dirname "$0")/.."
nvidia-smi -L || true
status=0

python3 - "$bin" "$out" <<'EOF' || status=1
import json, subprocess, sys
import numpy as np
from safetensors.numpy import load_file

binary, out = sys.argv[1], sys.argv[2]
ref = json.load(open("fixtures/tiny/reference.json"))
tensors = load_file("fixtures/tiny/reference.safetensors")
worst = {}
ok = True
for dtype, tol in (("f32", 1e-4), ("f16", 5e-2)):
    for p in ref["prompts"]:
        ids = ",".join(map(str, p["ids"]))
        path = f"{out}/logits-{dtype}-{p['name']}.safetensors"
        r = subprocess.run([binary, "logits", "--model", "fixtures/tiny/hf", "--device", "cuda",
                            "--dtype", dtype, "--ids", ids, "--all-positions", "--out", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"logits {dtype} {p['name']}: exit {r.returncode}: {r.stderr.strip()}")
            ok = False
            continue
        got = load_file(path)["logits"]
        diff = float(np.abs(got - tensors[p["logits_tensor"]]).max())
        worst[dtype] = max(worst.get(dtype, 0.0), diff)
        ok &= diff <= tol
    print(f"cuda {dtype}: max |logit - transformers| over {len(ref['prompts'])} prompts = {worst.get(dtype)}")
for p in ref["prompts"]:
    n = p["greedy"]["max_new_tokens"]
    r = subprocess.run([binary, "generate", "--model", "fixtures/tiny/hf", "--device", "cuda", "--greedy",
                        "--ignore-eos", "-n", str(n), "--format", "json",
                        "--prompt-ids", ",".join(map(str, p["ids"]))], capture_output=True, text=True)
    got = json.loads(r.stdout.splitlines()[-1])["ids"] if r.returncode == 0 else r.stderr.strip()
    same = got == p["greedy"]["ids"]
    ok &= same
    print(f"cuda greedy {p['name']}: {'same as transformers' if same else f'DIFFERENT: {got}'}")
sys.exit(0 if ok else 1)
EOF

python3 - "$out" <<'EOF' && {
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
from safetensors.torch import save_file
torch.manual_seed(0)
m = GPT2LMHeadModel(GPT2Config())
sd = {k: v.contiguous() for k, v in m.transformer.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
d = sys.argv[1] + "/random-124M"
import os; os.makedirs(d, exist_ok=True)
save_file(sd, d + "/model.safetensors", metadata={"format": "pt"})
m.config.to_json_file(d + "/config.json")
EOF
  prompt=$(seq 1 32 | tr '\n' ',' | sed 's/,$//')
  for dev in cuda cpu; do
    for dtype in f32 f16; do
      echo "== 124M-shape random model, $dev $dtype, 32-token prompt + 128 tokens"
      "$bin" generate --model "$out/random-124M" --device "$dev" --dtype "$dtype" --greedy --ignore-eos \
        -n 128 --prompt-ids "$prompt" --stats >/dev/null || status=1
    done
  done
  rm -rf "$out/random-124M"
}
exit $status
