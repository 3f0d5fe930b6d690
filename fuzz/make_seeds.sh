#!/bin/sh
# Seeds for the fuzz targets from the committed micro fixtures.
# Usage (from fuzz/): sh make_seeds.sh
set -eu
fx=../fixtures/micro
mkdir -p corpus/index corpus/checkpoint
for d in openai openai-sharded openai-f16; do
    cp "$fx/$d/model.ckpt.index" "corpus/index/$d"
    python3 - "$fx/$d" "corpus/checkpoint/$d" <<'PY'
import glob, struct, sys
src, out = sys.argv[1], sys.argv[2]
index = open(f"{src}/model.ckpt.index", "rb").read()
shards = sorted(glob.glob(f"{src}/model.ckpt.data-*"))
data = [open(s, "rb").read() for s in shards]
# The target splits the rest into equal parts: pad shard 0 to the longer length.
if len(data) == 2:
    n = max(len(d) for d in data)
    data = [d + b"\0" * (n - len(d)) for d in data]
open(out, "wb").write(struct.pack("<H", len(index)) + bytes([len(data) - 1]) + index + b"".join(data))
PY
done
ls -l corpus/index corpus/checkpoint
