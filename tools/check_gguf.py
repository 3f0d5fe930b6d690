#!/usr/bin/env python3
"""Cross-check a GGUF file written by `gpt2 convert --dtype q8_0` with llama.cpp's own reader.

Reads the file with gguf-py (`gguf.GGUFReader`, the package llama.cpp maintains; versions in
tools/requirements-gguf-check.txt) and checks it against gguf-py's constants for the GPT2
architecture and against what llama.cpp's GPT-2 loader asks for (`llama_model_gpt2::
load_arch_tensors` in src/models/gpt2.cpp, formerly the LLM_ARCH_GPT2 case of
src/llama-model.cpp's create_tensors):

- tensor names: every name is one of gguf.MODEL_TENSORS[MODEL_ARCH.GPT2] (gguf.TENSOR_NAMES),
  and every one the loader requires is present. `output.weight` is optional there: when it is
  missing the loader uses `token_embd.weight` for the LM head (TENSOR_NOT_REQUIRED, then
  TENSOR_DUPLICATED), which is what GPT-2's tied head is;
- types: Q8_0 for token_embd.weight and the four weight matrices of each block, F32 for the
  rest (biases, norms, position_embd);
- shapes, in GGML order (ne0 first), as the loader creates them: token_embd {n_embd, n_vocab},
  attn_qkv {n_embd, 3 n_embd}, ffn_up {n_embd, n_ff}, ffn_down {n_ff, n_embd}, ...;
- metadata: general.architecture, the gpt2.* hyperparameters, general.file_type
  (LlamaFileType.MOSTLY_Q8_0), the tokenizer (tokenizer.ggml.model/pre/tokens/token_type/
  merges/bos/eos), each with the value type llama.cpp's loader reads it as (gguf-py's
  GGUFWriter writes the same types) and values consistent with the tensors (and with the
  source's config.json when --source is given);
- values, with --source (the Hugging Face f32/f16/bf16 safetensors directory the file was
  converted from): gguf.quants.dequantize of each Q8_0 tensor equals the source weight,
  transposed to [out, in] for GPT-2's Conv1D weights, within the Q8_0 rounding: each block's
  f16 scale is f16(max|block| / 127) (to an f16 rounding) and |w - deq| <= max|block|/127/2 +
  127·|max|block|/127 - scale|; F32 tensors are equal bit for bit.

Usage (see the workspace README, "Models"):

    python3 -m venv /tmp/gguf-venv && /tmp/gguf-venv/bin/pip install -r tools/requirements-gguf-check.txt
    gpt2 convert --from models/124M --to /tmp/124M-q8_0 --dtype q8_0
    /tmp/gguf-venv/bin/python tools/check_gguf.py /tmp/124M-q8_0 --source models/124M

Prints a short report; exits 1 on any mismatch (2 on bad arguments).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import struct
import sys
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from gguf import Keys, MODEL_ARCH, MODEL_TENSOR, MODEL_TENSORS, TENSOR_NAMES

ARCH = MODEL_ARCH.GPT2
ARCH_NAME = gguf.MODEL_ARCH_NAMES[ARCH]

# Tensors llama.cpp's GPT-2 loader creates with TENSOR_NOT_REQUIRED (all others are required).
OPTIONAL = {MODEL_TENSOR.OUTPUT}
# Weight matrices stored as Q8_0 (the rest is F32).
Q8_0_TENSORS = {
    MODEL_TENSOR.TOKEN_EMBD,
    MODEL_TENSOR.OUTPUT,
    MODEL_TENSOR.ATTN_QKV,
    MODEL_TENSOR.ATTN_OUT,
    MODEL_TENSOR.FFN_UP,
    MODEL_TENSOR.FFN_DOWN,
}
PER_BLOCK = {
    MODEL_TENSOR.ATTN_NORM,
    MODEL_TENSOR.ATTN_QKV,
    MODEL_TENSOR.ATTN_OUT,
    MODEL_TENSOR.FFN_NORM,
    MODEL_TENSOR.FFN_UP,
    MODEL_TENSOR.FFN_DOWN,
}
# Tensors that exist with a ".bias" too (the loader creates both, required): every block
# tensor, and the final norm.
WITH_BIAS = PER_BLOCK | {MODEL_TENSOR.OUTPUT_NORM}
# GGUF tensor → the Hugging Face GPT-2 tensor it comes from, and whether it is a Conv1D weight
# ([in, out] in the source, [out, in] in the file).
HF_NAMES = {
    MODEL_TENSOR.TOKEN_EMBD: ("wte", False),
    MODEL_TENSOR.POS_EMBD: ("wpe", False),
    MODEL_TENSOR.OUTPUT_NORM: ("ln_f", False),
    MODEL_TENSOR.OUTPUT: ("wte", False),
    MODEL_TENSOR.ATTN_NORM: ("h.{bid}.ln_1", False),
    MODEL_TENSOR.ATTN_QKV: ("h.{bid}.attn.c_attn", True),
    MODEL_TENSOR.ATTN_OUT: ("h.{bid}.attn.c_proj", True),
    MODEL_TENSOR.FFN_NORM: ("h.{bid}.ln_2", False),
    MODEL_TENSOR.FFN_UP: ("h.{bid}.mlp.c_fc", True),
    MODEL_TENSOR.FFN_DOWN: ("h.{bid}.mlp.c_proj", True),
}

QK8_0 = 32  # weights per Q8_0 block
BLOCK_Q8_0 = np.dtype([("d", "<f2"), ("qs", "i1", (QK8_0,))])  # ggml's block_q8_0, 34 bytes


def key(template: str) -> str:
    return template.format(arch=ARCH_NAME)


class Check:
    """Collects failures; prints each as it happens."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []

    def fail(self, msg: str) -> None:
        self.failures.append(msg)
        print(f"  FAIL {msg}")

    def expect(self, ok: bool, msg: str) -> bool:
        if not ok:
            self.fail(msg)
        return ok

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        print(f"  note {msg}")


def field_value(reader: gguf.GGUFReader, name: str):
    field = reader.fields.get(name)
    return None if field is None else field.contents()


def check_metadata(reader: gguf.GGUFReader, c: Check, source_config: dict | None) -> dict:
    """Checks the metadata keys and returns the hyperparameters."""
    print("metadata:")
    # (key, the type llama.cpp reads it as, required by llama.cpp for gpt2)
    expected = [
        (Keys.General.ARCHITECTURE, [V.STRING], True),
        (Keys.General.FILE_TYPE, [V.UINT32], False),
        (Keys.General.QUANTIZATION_VERSION, [V.UINT32], False),
        (key(Keys.LLM.CONTEXT_LENGTH), [V.UINT32], True),
        (key(Keys.LLM.EMBEDDING_LENGTH), [V.UINT32], True),
        (key(Keys.LLM.FEED_FORWARD_LENGTH), [V.UINT32], True),
        (key(Keys.LLM.BLOCK_COUNT), [V.UINT32], True),
        (key(Keys.Attention.HEAD_COUNT), [V.UINT32], True),
        (key(Keys.Attention.LAYERNORM_EPS), [V.FLOAT32], True),
        (key(Keys.LLM.VOCAB_SIZE), [V.UINT32], False),
        (Keys.Tokenizer.MODEL, [V.STRING], True),
        (Keys.Tokenizer.PRE, [V.STRING], False),
        (Keys.Tokenizer.LIST, [V.ARRAY, V.STRING], True),
        (Keys.Tokenizer.TOKEN_TYPE, [V.ARRAY, V.INT32], False),
        (Keys.Tokenizer.MERGES, [V.ARRAY, V.STRING], True),
        (Keys.Tokenizer.BOS_ID, [V.UINT32], False),
        (Keys.Tokenizer.EOS_ID, [V.UINT32], False),
    ]
    for name, types, required in expected:
        field = reader.fields.get(name)
        if field is None:
            if required:
                c.fail(f"missing required key {name}")
            else:
                c.note(f"optional key {name} absent")
            continue
        got = [t.name for t in field.types]
        c.expect(field.types == types, f"{name}: type {got}, expected {[t.name for t in types]}")

    version = field_value(reader, "GGUF.version")
    c.expect(version == 3, f"GGUF version {version}, expected 3")
    c.expect(
        field_value(reader, Keys.General.ARCHITECTURE) == ARCH_NAME,
        f"general.architecture = {field_value(reader, Keys.General.ARCHITECTURE)!r}, expected {ARCH_NAME!r}",
    )
    ftype = field_value(reader, Keys.General.FILE_TYPE)
    c.expect(
        ftype == gguf.LlamaFileType.MOSTLY_Q8_0,
        f"general.file_type = {ftype}, expected {int(gguf.LlamaFileType.MOSTLY_Q8_0)} (MOSTLY_Q8_0)",
    )
    qv = field_value(reader, Keys.General.QUANTIZATION_VERSION)
    c.expect(qv in (None, gguf.GGML_QUANT_VERSION), f"general.quantization_version = {qv}")

    hp = {
        "n_ctx": field_value(reader, key(Keys.LLM.CONTEXT_LENGTH)),
        "n_embd": field_value(reader, key(Keys.LLM.EMBEDDING_LENGTH)),
        "n_ff": field_value(reader, key(Keys.LLM.FEED_FORWARD_LENGTH)),
        "n_layer": field_value(reader, key(Keys.LLM.BLOCK_COUNT)),
        "n_head": field_value(reader, key(Keys.Attention.HEAD_COUNT)),
        "eps": field_value(reader, key(Keys.Attention.LAYERNORM_EPS)),
        "n_vocab": field_value(reader, key(Keys.LLM.VOCAB_SIZE)),
    }
    if None not in (hp["n_embd"], hp["n_ff"], hp["n_head"]):
        c.expect(hp["n_ff"] == 4 * hp["n_embd"], f"feed_forward_length {hp['n_ff']} != 4 · n_embd")
        c.expect(hp["n_embd"] % hp["n_head"] == 0, "n_embd not a multiple of head_count")
    if source_config is not None:
        src = {
            "n_ctx": source_config.get("n_positions", source_config.get("n_ctx")),
            "n_embd": source_config.get("n_embd"),
            "n_layer": source_config.get("n_layer"),
            "n_head": source_config.get("n_head"),
            "n_vocab": source_config.get("vocab_size"),
        }
        for k, v in src.items():
            if v is not None and hp[k] is not None:
                c.expect(hp[k] == v, f"{k} = {hp[k]} in the file, {v} in the source's config.json")
        eps = source_config.get("layer_norm_epsilon")
        if eps is not None and hp["eps"] is not None:
            c.expect(np.float32(eps) == np.float32(hp["eps"]), f"layer_norm_epsilon {hp['eps']} vs {eps}")
    print(
        "  hyperparameters: "
        + ", ".join(f"{k} {v}" for k, v in hp.items())
        + f"; file_type {ftype}; GGUF v{version}"
    )
    return hp


def check_tokenizer(reader: gguf.GGUFReader, c: Check, n_vocab: int | None, source: Path | None) -> None:
    print("tokenizer:")
    model = field_value(reader, Keys.Tokenizer.MODEL)
    if model is None:
        c.fail("no tokenizer (tokenizer.ggml.*): llama.cpp cannot load the file without one")
        return
    c.expect(model == "gpt2", f"tokenizer.ggml.model = {model!r}, expected 'gpt2' (byte-level BPE)")
    pre = field_value(reader, Keys.Tokenizer.PRE)
    c.expect(pre in (None, "gpt-2", "default"), f"tokenizer.ggml.pre = {pre!r}, expected 'gpt-2'")
    tokens = reader.fields[Keys.Tokenizer.LIST].contents()
    c.expect(n_vocab is None or len(tokens) == n_vocab, f"{len(tokens)} tokens, token_embd has {n_vocab} rows")
    c.expect(len(set(tokens)) == len(tokens), "duplicate tokens")
    types_field = reader.fields.get(Keys.Tokenizer.TOKEN_TYPE)
    types = types_field.contents() if types_field is not None else None
    if types is not None:
        c.expect(len(types) == len(tokens), f"{len(types)} token types for {len(tokens)} tokens")
        bad = sorted(set(types) - {t.value for t in gguf.TokenType})
        c.expect(not bad, f"unknown token types {bad}")
    merges = reader.fields[Keys.Tokenizer.MERGES].contents()
    vocab = set(tokens)
    bad_merges = [m for m in merges if len(m.split(" ")) != 2 or m.replace(" ", "") not in vocab]
    c.expect(not bad_merges, f"{len(bad_merges)} merges not 'a b' with 'ab' a token, e.g. {bad_merges[:3]}")
    eot = tokens.index("<|endoftext|>") if "<|endoftext|>" in vocab else None
    for name in (Keys.Tokenizer.BOS_ID, Keys.Tokenizer.EOS_ID):
        v = field_value(reader, name)
        if v is not None:
            c.expect(v < len(tokens), f"{name} = {v} out of range")
            c.expect(eot is None or v == eot, f"{name} = {v}, <|endoftext|> is {eot}")
    if types is not None and eot is not None:
        c.expect(types[eot] == gguf.TokenType.CONTROL, f"<|endoftext|> has type {types[eot]}, expected CONTROL (3)")
    if source is not None and (source / "vocab.json").is_file() and (source / "merges.txt").is_file():
        vocab_json = json.loads((source / "vocab.json").read_text(encoding="utf-8"))
        by_id = sorted(vocab_json, key=vocab_json.get)
        c.expect(by_id == tokens, "tokens differ from the source's vocab.json (in id order)")
        lines = (source / "merges.txt").read_text(encoding="utf-8").splitlines()
        src_merges = [m for m in lines if m and not m.startswith("#version")]
        c.expect(src_merges == merges, "merges differ from the source's merges.txt")
        print("  tokens and merges equal to the source's vocab.json / merges.txt")
    print(
        f"  model {model!r}, pre {pre!r}, {len(tokens)} tokens, {len(merges)} merges, "
        f"bos {field_value(reader, Keys.Tokenizer.BOS_ID)}, eos {field_value(reader, Keys.Tokenizer.EOS_ID)}"
    )


def expected_tensors(hp: dict) -> dict[str, tuple[MODEL_TENSOR, int | None, list[int]]]:
    """GGUF name → (tensor kind, block, shape in GGML order) as llama.cpp's GPT-2 loader creates them."""
    e, ff, ctx, vocab = hp["n_embd"], hp["n_ff"], hp["n_ctx"], hp["n_vocab"]
    shapes = {
        MODEL_TENSOR.TOKEN_EMBD: [e, vocab],
        MODEL_TENSOR.POS_EMBD: [e, ctx],
        MODEL_TENSOR.OUTPUT_NORM: [e],
        MODEL_TENSOR.OUTPUT: [e, vocab],
        MODEL_TENSOR.ATTN_NORM: [e],
        MODEL_TENSOR.ATTN_QKV: [e, 3 * e],
        MODEL_TENSOR.ATTN_OUT: [e, e],
        MODEL_TENSOR.FFN_NORM: [e],
        MODEL_TENSOR.FFN_UP: [e, ff],
        MODEL_TENSOR.FFN_DOWN: [ff, e],
    }
    bias = {
        MODEL_TENSOR.OUTPUT_NORM: [e],
        MODEL_TENSOR.ATTN_NORM: [e],
        MODEL_TENSOR.ATTN_QKV: [3 * e],
        MODEL_TENSOR.ATTN_OUT: [e],
        MODEL_TENSOR.FFN_NORM: [e],
        MODEL_TENSOR.FFN_UP: [ff],
        MODEL_TENSOR.FFN_DOWN: [e],
    }
    out = {}
    for kind in MODEL_TENSORS[ARCH]:
        if kind not in shapes:
            raise SystemExit(f"gguf-py lists {kind.name} for gpt2, unknown to this check: update it")
        blocks = range(hp["n_layer"]) if kind in PER_BLOCK else [None]
        for bid in blocks:
            base = TENSOR_NAMES[kind].format(bid=bid)
            out[f"{base}.weight"] = (kind, bid, shapes[kind])
            if kind in WITH_BIAS:
                out[f"{base}.bias"] = (kind, bid, bias[kind])
    return out


def read_safetensors(dir_: Path) -> dict[str, np.ndarray]:
    """The tensors of dir_/model.safetensors as numpy arrays (memory-mapped; F32/F16/BF16)."""
    path = dir_ / "model.safetensors"
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = raw[a:b]
        dt = info["dtype"]
        if dt == "F32":
            arr = buf.view("<f4")
        elif dt == "F16":
            arr = buf.view("<f2").astype(np.float32)
        elif dt == "BF16":
            arr = (buf.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"{path}: tensor {name} has dtype {dt}; expected F32, F16 or BF16")
        name = name.removeprefix("transformer.")
        out[name] = arr.reshape(info["shape"])
    return out


def f16_round_bound(x: np.ndarray) -> np.ndarray:
    """Half an f16 ulp at |x| (normal: 2^-11 relative; subnormal: 2^-25)."""
    x = np.abs(x)
    exp = np.floor(np.log2(np.maximum(x, 2.0**-14)))
    return 2.0 ** (exp - 11)


def check_q8_0_values(name: str, t, src: np.ndarray, c: Check) -> tuple[float, float]:
    """Dequantizes t with gguf-py and compares with src ([out, in]); returns (max err, max err / bound)."""
    rows = t.data.shape[0]
    deq_shape = gguf.quants.quant_shape_from_byte_shape(t.data.shape, t.tensor_type)
    if tuple(deq_shape) != src.shape:
        c.fail(f"{name}: dequantized shape {tuple(deq_shape)}, source (as [out, in]) {src.shape}")
        return float("nan"), float("nan")
    worst_err, worst_ratio, bad_scales = 0.0, 0.0, 0
    step = 2048  # rows at a time (bounded memory)
    for r0 in range(0, rows, step):
        data = np.ascontiguousarray(t.data[r0 : r0 + step])
        deq = gguf.quants.dequantize(data, t.tensor_type).astype(np.float64).reshape(-1, QK8_0)
        d_file = data.view(BLOCK_Q8_0).reshape(-1)["d"].astype(np.float64)
        w = src[r0 : r0 + step].astype(np.float64).reshape(-1, QK8_0)
        amax = np.abs(w).max(axis=1)
        d_ideal = amax / 127.0
        # f16(d) with d computed in f32: half an f16 ulp, plus the f32 rounding of d.
        bad_scales += int((np.abs(d_file - d_ideal) > f16_round_bound(d_ideal) + d_ideal * 2.0**-23).sum())
        # |w - q·d| <= d/2 with the f32 scale the int8 values were computed with, and the f16
        # rounding of the scale moves each of the up to 127 steps by |d - f16(d)|.
        bound = amax / 254.0 + 127.0 * np.abs(d_file - d_ideal) + amax * 1e-6 + 1e-30
        err = np.abs(w - deq)
        worst_err = max(worst_err, float(err.max()))
        worst_ratio = max(worst_ratio, float((err / bound[:, None]).max()))
    c.expect(bad_scales == 0, f"{name}: {bad_scales} block scales are not f16(max|block| / 127)")
    c.expect(worst_ratio <= 1.0, f"{name}: |w - deq| exceeds the Q8_0 bound (worst {worst_ratio:.3f}× the bound)")
    return worst_err, worst_ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path, help="a .gguf file, or a model directory holding model.gguf")
    ap.add_argument(
        "--source",
        type=Path,
        help="the Hugging Face safetensors directory it was converted from (compares the weights)",
    )
    args = ap.parse_args()
    path = args.gguf / "model.gguf" if args.gguf.is_dir() else args.gguf
    if not path.is_file():
        print(f"error: {path}: not a file", file=sys.stderr)
        return 2
    source = read_safetensors(args.source) if args.source else None
    source_config = None
    if args.source and (args.source / "config.json").is_file():
        source_config = json.loads((args.source / "config.json").read_text())

    c = Check()
    print(f"{path} (gguf-py {importlib.metadata.version('gguf')})")
    reader = gguf.GGUFReader(path)
    hp = check_metadata(reader, c, source_config)
    tensors = {t.name: t for t in reader.tensors}
    if hp["n_vocab"] is None and "token_embd.weight" in tensors:
        hp["n_vocab"] = int(tensors["token_embd.weight"].shape[1])
    check_tokenizer(reader, c, hp["n_vocab"], args.source)
    if None in (hp["n_embd"], hp["n_ff"], hp["n_layer"], hp["n_ctx"], hp["n_vocab"]):
        c.fail("hyperparameters missing: cannot check the tensors")
        return report(c)

    print("tensors:")
    expected = expected_tensors(hp)
    unknown = sorted(set(tensors) - set(expected))
    c.expect(not unknown, f"tensors llama.cpp's gpt2 loader does not know: {unknown[:5]}")
    missing = [n for n, (kind, _, _) in expected.items() if n not in tensors and kind not in OPTIONAL]
    c.expect(not missing, f"required tensors missing: {missing[:5]}")
    absent_optional = [n for n, (kind, _, _) in expected.items() if n not in tensors and kind in OPTIONAL]
    for n in absent_optional:
        c.note(
            f"{n} absent: optional for gpt2 in llama.cpp (created TENSOR_NOT_REQUIRED; when "
            "missing, token_embd.weight is used as the LM head, TENSOR_DUPLICATED)"
        )
    counts: dict[str, int] = {}
    for name, t in tensors.items():
        if name not in expected:
            continue
        kind, bid, shape = expected[name]
        want = Q.Q8_0 if kind in Q8_0_TENSORS and name.endswith(".weight") else Q.F32
        c.expect(t.tensor_type == want, f"{name}: type {t.tensor_type.name}, expected {want.name}")
        got = [int(x) for x in t.shape]
        c.expect(got == shape, f"{name}: shape {got} (GGML order), expected {shape}")
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    print(
        f"  {len(tensors)} tensors ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}); "
        f"{len(expected) - len(absent_optional)} required by llama.cpp's gpt2 loader, all present: {not missing}"
    )
    if "output.weight" in tensors and "token_embd.weight" in tensors:
        same = np.array_equal(tensors["output.weight"].data, tensors["token_embd.weight"].data)
        c.expect(same, "output.weight differs from token_embd.weight (GPT-2's head is tied)")

    if source is None:
        c.note("no --source: weights not compared")
        return report(c)
    print("values (gguf.quants.dequantize vs the source):")
    worst_err, worst_ratio, n_q, n_f = 0.0, 0.0, 0, 0
    for name, t in tensors.items():
        if name not in expected:
            continue
        kind, bid, _ = expected[name]
        hf_base, conv = HF_NAMES[kind]
        hf = f"{hf_base.format(bid=bid)}.{name.rsplit('.', 1)[1]}"
        if hf not in source:
            c.fail(f"{name}: source has no {hf}")
            continue
        src = source[hf]
        if conv and name.endswith(".weight"):
            src = src.T  # Conv1D [in, out] → [out, in]
        if t.tensor_type == Q.Q8_0:
            err, ratio = check_q8_0_values(name, t, np.ascontiguousarray(src), c)
            worst_err, worst_ratio, n_q = max(worst_err, err), max(worst_ratio, ratio), n_q + 1
        elif t.tensor_type == Q.F32:
            got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(src.shape)
            c.expect(np.array_equal(got, src.astype(np.float32)), f"{name}: F32 values differ from {hf}")
            n_f += 1
    print(
        f"  {n_q} Q8_0 tensors compared: max |w - deq| {worst_err:.3g}, worst {worst_ratio:.4f}× the "
        f"per-block bound (at most 1 passes); {n_f} F32 tensors compared bit for bit"
    )
    return report(c)


def report(c: Check) -> int:
    if c.failures:
        print(f"FAILED: {len(c.failures)} mismatch(es)")
        return 1
    print("OK: the file matches llama.cpp's gpt2 layout" + (f" ({len(c.notes)} note(s))" if c.notes else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
