"""Write a GPT-2 model as an F32 or F16 GGUF file for llama.cpp, to compare against it.

`gpt2 convert --dtype q8_0` writes this project's Q8_0 GGUF; llama.cpp also runs GPT-2 in
F32 and F16, and this script writes those files from a Hugging Face f32 safetensors
directory (f32 or f16, e.g. `target/bench-models/124M-random`), laid out as llama.cpp's own
`convert_hf_to_gguf.py` lays out GPT-2: the Conv1D weights transposed to `[out, in]`; for
f16 the 2-D weights in F16 except `position_embd` (F32, as llama.cpp's converter forces),
1-D tensors F32; no `output.weight` (the head is tied to `token_embd`). The metadata and the
tokenizer are copied from a GGUF file of the same model written by `gpt2 convert --dtype
q8_0` (only `general.file_type` changes).

    pip install gguf numpy
    python tools/make_llama_gguf.py --model target/bench-models/124M-random \
        --metadata-from target/bench-models/124M-random-q8_0-gguf/model.gguf \
        --outtype f16 --out target/bench-models/124M-random-f16.gguf

`cargo xtask bench --llama-bench PATH` looks for `<size>-random-f32.gguf` and
`<size>-random-f16.gguf` next to the bench models and prints this command when one is
missing.
"""
import argparse
import json
import struct

import gguf
import numpy as np

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--model", required=True, help="directory with an f32 or f16 model.safetensors")
parser.add_argument("--metadata-from", required=True, help="a q8_0 model.gguf of the same model")
parser.add_argument("--outtype", choices=["f32", "f16"], required=True)
parser.add_argument("--out", required=True, help="the GGUF file to write")
args = parser.parse_args()

path = f"{args.model}/model.safetensors"
with open(path, "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
base = 8 + n
header.pop("__metadata__", None)
raw = np.memmap(path, dtype=np.uint8, mode="r")
DTYPES = {"F32": np.float32, "F16": np.float16}


def tensor(name):
    h = header[name]
    a, b = h["data_offsets"]
    return np.frombuffer(raw[base + a : base + b], dtype=DTYPES[h["dtype"]]).reshape(h["shape"])


reader = gguf.GGUFReader(args.metadata_from)
w = gguf.GGUFWriter(args.out, "gpt2")
skip = {"general.architecture", "general.file_type", "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
for field in reader.fields.values():
    if field.name in skip:
        continue
    vt = field.types[0]
    if vt == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        if sub == gguf.GGUFValueType.STRING:
            val = [bytes(field.parts[i]) for i in field.data]
        else:
            val = [field.parts[i].tolist()[0] for i in field.data]
        w.add_key_value(field.name, val, vt, sub_type=sub)
    elif vt == gguf.GGUFValueType.STRING:
        w.add_key_value(field.name, bytes(field.parts[field.data[0]]), vt)
    else:
        w.add_key_value(field.name, field.parts[field.data[0]].tolist()[0], vt)
w.add_file_type(gguf.LlamaFileType.ALL_F32 if args.outtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)

n_layer = int(reader.fields["gpt2.block_count"].parts[-1][0])


def put(name, arr, conv1d=False):
    arr = np.asarray(arr, dtype=np.float32)
    if conv1d:
        arr = np.ascontiguousarray(arr.T)
    if args.outtype == "f16" and arr.ndim == 2 and name != "position_embd.weight":
        arr = arr.astype(np.float16)
    w.add_tensor(name, arr)


put("token_embd.weight", tensor("wte.weight"))
put("position_embd.weight", tensor("wpe.weight"))
for i in range(n_layer):
    p = f"h.{i}."
    for hf, gg, conv in [
        ("ln_1", "attn_norm", False),
        ("attn.c_attn", "attn_qkv", True),
        ("attn.c_proj", "attn_output", True),
        ("ln_2", "ffn_norm", False),
        ("mlp.c_fc", "ffn_up", True),
        ("mlp.c_proj", "ffn_down", True),
    ]:
        put(f"blk.{i}.{gg}.weight", tensor(p + hf + ".weight"), conv)
        put(f"blk.{i}.{gg}.bias", tensor(p + hf + ".bias"))
put("output_norm.weight", tensor("ln_f.weight"))
put("output_norm.bias", tensor("ln_f.bias"))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print("wrote", args.out)
