#!/bin/sh
# Seeds for every fuzz target, from the committed micro fixtures and GPT-2's vocabulary
# files, written to seeds/<target>/ (committed, a few KB per target; `cargo test` replays
# them, see tests/tests/fuzz_seeds.rs). Deterministic: rerunning rewrites the same files.
# Usage (from fuzz/): sh make_seeds.sh
set -eu
fx=../fixtures/micro
rm -rf seeds
mkdir -p seeds/index seeds/checkpoint seeds/gguf seeds/hf_dir seeds/tokenizer_files \
    seeds/encode_decode seeds/sampling seeds/server_request
for d in openai openai-sharded openai-f16; do
    cp "$fx/$d/model.ckpt.index" "seeds/index/$d"
    python3 - "$fx/$d" "seeds/checkpoint/$d" <<'PY'
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

python3 - "$fx" ../crates/gpt2-tokenizer/data/vocab.bpe <<'PY'
import json, math, struct, sys

fx, vocab_bpe = sys.argv[1], sys.argv[2]

def write(path, data):
    open(path, "wb").write(data)

# --- hf_dir: [config_len u16][config.json][model.safetensors] ---------------------------
def expected(c):
    E, V, P, L = c["n_embd"], c["vocab_size"], c["n_positions"], c["n_layer"]
    t = [("wte.weight", [V, E]), ("wpe.weight", [P, E])]
    for i in range(L):
        p = f"h.{i}"
        t += [(f"{p}.ln_1.weight", [E]), (f"{p}.ln_1.bias", [E]),
              (f"{p}.attn.c_attn.weight", [E, 3 * E]), (f"{p}.attn.c_attn.bias", [3 * E]),
              (f"{p}.attn.c_proj.weight", [E, E]), (f"{p}.attn.c_proj.bias", [E]),
              (f"{p}.ln_2.weight", [E]), (f"{p}.ln_2.bias", [E]),
              (f"{p}.mlp.c_fc.weight", [E, 4 * E]), (f"{p}.mlp.c_fc.bias", [4 * E]),
              (f"{p}.mlp.c_proj.weight", [4 * E, E]), (f"{p}.mlp.c_proj.bias", [E])]
    return t + [("ln_f.weight", [E]), ("ln_f.bias", [E])]

def f16(x):
    return struct.pack("<e", x)

def bf16(x):
    return struct.pack("<f", x)[2:]

def safetensors(tensors, dtype, prefix="", extra=()):
    """tensors: [(name, shape)]; values are a deterministic ramp; extra: more (name, shape)."""
    enc = {"F32": lambda x: struct.pack("<f", x), "F16": f16, "BF16": bf16}[dtype]
    header, data = {}, b""
    allt = [(prefix + n, s) for n, s in tensors] + list(extra)
    for k, (name, shape) in enumerate(allt):
        n = math.prod(shape)
        if name.endswith(".weight") and "ln_" in name:
            vals = [1.0 + 0.01 * i for i in range(n)]
        else:
            vals = [((i * 7 + k) % 13 - 6) / 32 for i in range(n)]
        b = b"".join(enc(v) for v in vals)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(b)]}
        data += b
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data

def hf_seed(name, config, st):
    c = json.dumps(config, separators=(",", ":")).encode()
    write(f"seeds/hf_dir/{name}", struct.pack("<H", len(c)) + c + st)

micro_config = open(f"{fx}/hf/config.json", "rb").read()
write("seeds/hf_dir/micro", struct.pack("<H", len(micro_config)) + micro_config
      + open(f"{fx}/hf/model.safetensors", "rb").read())
mini = {"model_type": "gpt2", "vocab_size": 8, "n_positions": 4, "n_embd": 4, "n_head": 2,
        "n_layer": 1, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new", "n_inner": None}
tensors = expected(mini)
hf_seed("mini-f32", mini, safetensors(tensors, "F32"))
hf_seed("mini-f16", mini, safetensors(tensors, "F16"))
# transformers' own names: the `transformer.` prefix, the attention-mask buffers, a tied
# lm_head (written as a copy of wte: the reader compares bytes).
st = safetensors(tensors, "BF16", prefix="transformer.",
                 extra=[("h.0.attn.bias", [1, 1, 4, 4]), ("h.0.attn.masked_bias", [])])
hf_seed("mini-bf16-prefixed", dict(mini, n_ctx=4, n_inner=16), st)
two = dict(mini, n_layer=2, n_head=1, vocab_size=4)
hf_seed("mini-2-layers", two, safetensors(expected(two), "F32"))
# A config that fails (n_inner is not 4 * n_embd) and weights that do not match it.
hf_seed("mini-bad-n-inner", dict(mini, n_inner=8), safetensors(tensors, "F32"))

# --- tokenizer_files: [kind u8][a_len u16][a][b_len u16][b][text] ------------------------
def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

b2u = bytes_to_unicode()
vocab = {b2u[b]: b for b in range(256)}
merges = []
for line in open(vocab_bpe, encoding="utf-8").read().split("\n")[1:121]:
    a, b = line.split(" ")
    merges.append((a, b))
    vocab.setdefault(a + b, len(vocab))
vocab["<|endoftext|>"] = len(vocab)
encoder_json = json.dumps(vocab, ensure_ascii=False, separators=(",", ":")).encode()
merges_txt = ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)).encode()

def tok_seed(name, kind, a, b, text):
    write(f"seeds/tokenizer_files/{name}",
          bytes([kind]) + struct.pack("<H", len(a)) + a + struct.pack("<H", len(b)) + b + text)

tok_seed("pair-bytes", 0, encoder_json, merges_txt, "Hello there, the world's end.".encode())
short_merges = ("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges[:60])).encode()
tok_seed("pair-files", 2, encoder_json, short_merges, "caf\u00e9 \U0001f44b 42".encode())
tj = {
    "version": "1.0",
    "added_tokens": [{"id": vocab["<|endoftext|>"], "content": "<|endoftext|>", "special": True}],
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                      "use_regex": True},
    "model": {"type": "BPE", "dropout": None, "unk_token": None,
              "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": False,
              "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges[:60]]},
}
tok_seed("tokenizer-json", 1, json.dumps(tj, ensure_ascii=False).encode(), b"",
         "in the end<|endoftext|>".encode())
tj["model"]["merges"] = [[a, b] for a, b in merges[:30]]
tj["model"]["vocab"] = {t: i for t, i in vocab.items() if t != "<|endoftext|>"}
tok_seed("tokenizer-json-array-merges", 3, json.dumps(tj, ensure_ascii=False).encode(), b"",
         b"\xff\xfe not utf-8 \xc3")

# --- encode_decode: raw text ------------------------------------------------------------
texts = {
    "english": "Hello, world! The quick brown fox jumps over the lazy dog.",
    "contractions": "I'm sure they'll say it's what we'd've done, y'all.",
    "whitespace": "  leading\tand\n\n\ntrailing   \r\n  ",
    "unicode": "caf\u00e9 na\u00efve \u4e16\u754c \U0001f44b\U0001f3fd \u0928\u092e\u0938\u094d\u0924\u0947",
    "numbers": "3.14159 1,000,000 0x1F 2026-12-02",
    "endoftext": "end<|endoftext|>start <|endoftext|>",
}
for name, t in texts.items():
    write(f"seeds/encode_decode/{name}", t.encode())
write("seeds/encode_decode/invalid-utf8", b"ok \xff\xfe\xc3 \xe2\x82 \xf0\x9f\x91 tail")

# --- sampling ---------------------------------------------------------------------------
def sample_seed(name, flags, temp, top_k, top_p, min_p, pen, window, seed, top_n, context, logits):
    def f(x, pick):
        return struct.pack("<I", x) if pick else struct.pack("<f", x)
    pick = flags & 0x80 != 0
    b = bytes([flags]) + f(temp, pick) + struct.pack("<I", top_k) + f(top_p, pick) + f(min_p, pick)
    b += f(pen, pick) + struct.pack("<I", window) + struct.pack("<Q", seed)
    b += bytes([top_n, len(context)]) + b"".join(struct.pack("<I", c) for c in context)
    # Logits: values 0x5xxxxxxx map to (raw & 0xFFFF) / 1024 - 32.
    b += b"".join(struct.pack("<I", 0x50000000 | int((l + 32) * 1024)) for l in logits)
    write(f"seeds/sampling/{name}", b)

ls = [1.0, 3.0, 2.0, -1.0, 0.5, 0.0, -4.0, 2.5]
sample_seed("default", 0, 1.0, 0, 1.0, 0.0, 1.0, 0, 0, 0, [], ls)
sample_seed("greedy", 0, 0.0, 0, 1.0, 0.0, 1.0, 0, 0, 3, [], ls)
sample_seed("filters", 0x1F, 0.7, 3, 0.9, 0.05, 1.3, 4, 42, 5, [1, 2, 1, 7], ls)
sample_seed("picked", 0x9F, 2, 2, 1, 1, 1, 8, 7, 2, [0, 2], ls * 3)
specials = struct.pack("<III", 0x10000000, 0x20000000, 0x40000001)
write("seeds/sampling/specials", bytes([0x03]) + struct.pack("<f", 1.0) + struct.pack("<I", 2)
      + struct.pack("<ff", 0.5, 0.0) + struct.pack("<fI", 1.0, 0) + struct.pack("<Q", 1)
      + bytes([4, 0]) + specials + struct.pack("<I", 0x50008000))

# --- server_request: POST /v1/completions bodies ----------------------------------------
requests = {
    "greedy": {"model": "tiny", "prompt": "Hello", "max_tokens": 16, "temperature": 0},
    "many": {"prompt": ["a", "b"], "n": 2, "best_of": 3, "logprobs": 5, "echo": True, "seed": -1,
             "stop": ["\n", "."], "top_p": 0.9, "top_k": 40, "min_p": 0.05},
    "ids-stream": {"prompt": [[1, 2, 3], [50256]], "stream": True,
                   "stream_options": {"include_usage": True}, "logit_bias": {"50256": -100},
                   "presence_penalty": 1.5, "frequency_penalty": -0.5,
                   "repetition_penalty": 1.2, "ignore_eos": True},
    "bad": {"prompt": "x", "suffix": "y", "temperature": "hot", "n": 0},
}
for name, r in requests.items():
    write(f"seeds/server_request/{name}", json.dumps(r, separators=(",", ":")).encode())

# --- gguf: a small GGUF v3 container (F32, F16, Q8_0 tensors; every metadata type) ------
def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b

def kv(key, vtype, payload):
    return gstr(key) + struct.pack("<I", vtype) + payload

tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
meta = [
    kv("general.architecture", 8, gstr("gpt2")),
    kv("general.name", 8, gstr("seed")),
    kv("general.alignment", 4, struct.pack("<I", 32)),
    kv("gpt2.context_length", 10, struct.pack("<Q", 4)),
    kv("gpt2.attention.layer_norm_epsilon", 6, struct.pack("<f", 1e-5)),
    kv("seed.u8", 0, b"\x01"), kv("seed.i8", 1, b"\xff"), kv("seed.u16", 2, b"\x02\x00"),
    kv("seed.i16", 3, b"\xfe\xff"), kv("seed.i32", 5, struct.pack("<i", -3)),
    kv("seed.bool", 7, b"\x01"), kv("seed.i64", 11, struct.pack("<q", -5)),
    kv("seed.f64", 12, struct.pack("<d", 0.25)),
    kv("seed.nested", 9, struct.pack("<IQ", 9, 1) + struct.pack("<IQ", 4, 2) + struct.pack("<II", 1, 2)),
    kv("tokenizer.ggml.model", 8, gstr("gpt2")),
    kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(gstr(t) for t in tokens)),
    kv("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, 40) + b"".join(gstr(f"{a} {b}") for a, b in merges[:40])),
    kv("tokenizer.ggml.eos_token_id", 4, struct.pack("<I", vocab["<|endoftext|>"])),
]
def q8_block(i):
    return f16(0.5 + i) + bytes((j * 5 + i) % 256 for j in range(32))
tdata = [
    ("a.f32", [4, 2], 0, b"".join(struct.pack("<f", x / 4) for x in range(8))),
    ("b.f16", [3], 1, b"".join(f16(x) for x in (1.0, -2.0, 0.5))),
    ("c.q8_0", [64, 2], 8, b"".join(q8_block(i) for i in range(4))),
]
infos, data = b"", b""
for name, dims, ty, b in tdata:
    data += b"\0" * (-len(data) % 32)
    infos += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
    infos += struct.pack("<IQ", ty, len(data))
    data += b
head = b"GGUF" + struct.pack("<IQQ", 3, len(tdata), len(meta)) + b"".join(meta) + infos
head += b"\0" * (-len(head) % 32)
write("seeds/gguf/container", head + data)
# Version 1 (u32 counts and string lengths), no tensors, a little metadata.
def gstr1(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b
v1 = b"GGUF" + struct.pack("<III", 1, 0, 2) + gstr1("general.name") + struct.pack("<I", 8) + gstr1("v1")
v1 += gstr1("general.alignment") + struct.pack("<II", 4, 64)
write("seeds/gguf/v1-empty", v1)
PY
ls -l seeds/*
du -sh seeds
