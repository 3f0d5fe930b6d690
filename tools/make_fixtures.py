#!/usr/bin/env python3
"""Make the committed test fixtures in fixtures/ with public reference libraries.

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors tensorflow-cpu numpy
    .venv/bin/python tools/make_fixtures.py            # writes fixtures/tiny and fixtures/micro

No real GPT-2 weights are involved. Each model is a RANDOM-WEIGHT GPT-2 with the exact architecture,
made by Hugging Face `transformers` (GPT2LMHeadModel) from a fixed seed, with every bias and layer-norm
parameter perturbed away from its default so that bugs in bias / gain handling change the output.
The same numbers are written in both layouts:

- `hf/`: config.json + model.safetensors (f32; names without the `transformer.` prefix, no lm_head:
  the head is tied to wte), like openai-community/gpt2 on the Hugging Face hub;
- `openai*/`: hparams.json + a TensorFlow v1 checkpoint (`checkpoint`, `model.ckpt.index`,
  `model.ckpt.data-*`, `model.ckpt.meta`) written by TensorFlow's own `tf.compat.v1.train.Saver`
  with OpenAI's variable names (`model/h0/attn/c_attn/w` of shape [1, in, out], ...), like OpenAI's
  release of models/124M.

`reference.json` + `reference.safetensors` hold what transformers computes for a few prompts: logits at
every position, hidden states (HF `output_hidden_states`), greedy continuations, log-probs; the same
format as the shared gpt2-tiny reference (see fixtures/README.md).

The outputs are deterministic for fixed library versions (recorded in reference.json).
"""

import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "fixtures")


def openai_decode(ids):
    """OpenAI's decode: ids -> token strings -> bytes -> text with errors='replace'."""
    from gpt2_encoder import BYTE_ENCODER, ENCODER

    decoder = {v: k for k, v in ENCODER.items()}
    byte_decoder = {v: k for k, v in BYTE_ENCODER.items()}
    text = "".join(decoder[i] for i in ids)
    return bytearray(byte_decoder[c] for c in text).decode("utf-8", errors="replace")


def make_model(hp, seed):
    """A random GPT-2 of the given shape, biases and LN gains perturbed (deterministic)."""
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=hp["n_vocab"],
        n_positions=hp["n_ctx"],
        n_embd=hp["n_embd"],
        n_layer=hp["n_layer"],
        n_head=hp["n_head"],
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        initializer_range=1.5 / math.sqrt(hp["n_embd"]),
        bos_token_id=50256 if hp["n_vocab"] > 50256 else 0,
        eos_token_id=50256 if hp["n_vocab"] > 50256 else 0,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias") or (".ln_" in name and name.endswith(".weight")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    return model


def transformer_tensors(model):
    """Canonical HF tensors (no `transformer.` prefix, no attention-mask buffers), as numpy f32."""
    out = {}
    for name, t in model.transformer.state_dict().items():
        if name.endswith(".attn.bias") or name.endswith(".attn.masked_bias"):
            continue
        out[name] = t.detach().cpu().numpy().astype(np.float32).copy()
    return out


def write_hf(dir_, model, tensors):
    os.makedirs(dir_, exist_ok=True)
    save_file(tensors, os.path.join(dir_, "model.safetensors"), metadata={"format": "pt"})
    cfg = model.config.to_dict()
    keep = [
        "activation_function", "architectures", "bos_token_id", "eos_token_id", "initializer_range",
        "layer_norm_epsilon", "model_type", "n_ctx", "n_embd", "n_head", "n_inner", "n_layer",
        "n_positions", "scale_attn_weights", "tie_word_embeddings", "vocab_size",
    ]
    cfg["architectures"] = ["GPT2LMHeadModel"]
    cfg["n_ctx"] = cfg["n_positions"]
    with open(os.path.join(dir_, "config.json"), "w") as f:
        json.dump({k: cfg.get(k) for k in keep}, f, indent=2, sort_keys=True)
        f.write("\n")


def openai_name(hf_name):
    """HF canonical name -> OpenAI checkpoint variable name."""
    n = hf_name
    if n == "wte.weight":
        return "model/wte"
    if n == "wpe.weight":
        return "model/wpe"
    if n.startswith("ln_f."):
        return "model/ln_f/" + ("g" if n.endswith("weight") else "b")
    parts = n.split(".")  # h.{i}.{ln_1|attn|mlp}[.{c_attn|c_proj|c_fc}].{weight|bias}
    i = parts[1]
    if parts[2] in ("ln_1", "ln_2"):
        return f"model/h{i}/{parts[2]}/" + ("g" if parts[3] == "weight" else "b")
    return f"model/h{i}/{parts[2]}/{parts[3]}/" + ("w" if parts[4] == "weight" else "b")


def write_openai(dir_, hp, tensors, dtype="float32", shards=1):
    """A TF v1 checkpoint written by TensorFlow's own Saver, with OpenAI's names and shapes."""
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    os.makedirs(dir_, exist_ok=True)
    graph = tf.Graph()
    names = list(tensors)
    with graph.as_default():
        variables, values = [], []
        for k, name in enumerate(names):
            value = tensors[name]
            if value.ndim == 2 and ".weight" in name and name.startswith("h."):
                value = value[None, :, :]  # OpenAI's conv1d weights are [1, in, out]
            values.append(value.astype(dtype))
            with tf.device(f"/cpu:{k % shards}"):
                # Zeros in the graph, the values fed at load time: keeps model.ckpt.meta small.
                variables.append(
                    tf.compat.v1.get_variable(
                        openai_name(name),
                        shape=value.shape,
                        dtype=dtype,
                        initializer=tf.compat.v1.zeros_initializer(),
                    )
                )
        saver = tf.compat.v1.train.Saver(var_list=variables, sharded=shards > 1, write_version=tf.compat.v1.train.SaverDef.V2)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": shards})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            for variable, value in zip(variables, values):
                variable.load(value, sess)
            saver.save(sess, os.path.join(dir_, "model.ckpt"), write_meta_graph=True)
    # Saver writes absolute paths into `checkpoint`; OpenAI's release has relative ones.
    with open(os.path.join(dir_, "checkpoint"), "w") as f:
        f.write('model_checkpoint_path: "model.ckpt"\nall_model_checkpoint_paths: "model.ckpt"\n')
    with open(os.path.join(dir_, "hparams.json"), "w") as f:
        json.dump({k: hp[k] for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")}, f, indent=2)
        f.write("\n")


def logprob(logits, ids):
    """Sum of log-softmax(logits[t])[ids[t+1]] in float64, as a perplexity command reports."""
    lp = torch.log_softmax(torch.from_numpy(logits).double(), dim=-1).numpy()
    per = [float(lp[t, ids[t + 1]]) for t in range(len(ids) - 1)]
    if not per:
        return None
    s = float(sum(per))
    return {"sum": s, "n_targets": len(per), "per_token": per, "mean": s / len(per), "perplexity": math.exp(-s / len(per))}


def reference(dir_, model, hp, prompts):
    """reference.json + reference.safetensors for the given prompts (HF eager attention, f32)."""
    from gpt2_encoder import encode  # noqa: E402  (tools/gpt2_encoder.py, a re-typing of OpenAI's encoder.py)

    tensors = {}
    items = []
    for i, (name, text, ids_override) in enumerate(prompts):
        ids = ids_override if ids_override is not None else (encode(text) if text else [50256])
        x = torch.tensor([ids])
        with torch.no_grad():
            out = model(x, output_hidden_states=True)
        logits = out.logits[0].numpy().astype(np.float32)
        hidden = torch.stack(out.hidden_states)[:, 0].numpy().astype(np.float32)
        tensors[f"logits.{i}"] = logits
        tensors[f"hidden_states.{i}"] = hidden
        n_new = min(20, hp["n_ctx"] - len(ids))
        # Greedy: a no-cache argmax loop (what generate(do_sample=False) computes, checked below).
        seq = list(ids)
        margins = []
        for _ in range(n_new):
            with torch.no_grad():
                step = model(torch.tensor([seq])).logits[0, -1]
            top2 = torch.topk(step, 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            seq.append(int(top2.indices[0]))
        model.generation_config.eos_token_id = None
        with torch.no_grad():
            gen = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=n_new, use_cache=True, eos_token_id=None, pad_token_id=hp["n_vocab"] - 1)
        if gen[0].tolist() != seq:
            raise SystemExit(f"{name}: generate(use_cache=True) {gen[0].tolist()} differs from the no-cache argmax loop {seq}")
        new = seq[len(ids):]
        item = {
            "name": name,
            "text": text,
            "ids": ids,
            "n_tokens": len(ids),
            "logits_tensor": f"logits.{i}",
            "hidden_states_tensor": f"hidden_states.{i}",
            "argmax_per_position": [int(a) for a in logits.argmax(-1)],
            "logprob": logprob(logits, ids),
            "greedy": {
                "max_new_tokens": n_new,
                "ids": new,
                "top1_margins": margins,
                "min_top1_margin": min(margins) if margins else None,
                "stops_at_endoftext": False,
            },
        }
        if hp["n_vocab"] > 50256:
            item["greedy"]["text"] = openai_decode(new)
            item["greedy"]["full_text"] = openai_decode(seq)
            with torch.no_grad():
                bos_logits = model(torch.tensor([[50256] + ids])).logits[0].numpy()
            item["logprob_with_bos"] = logprob(bos_logits, [50256] + ids) if text else None
        items.append(item)
    save_file(tensors, os.path.join(dir_, "reference.safetensors"))
    import safetensors, tensorflow, transformers  # noqa: E401

    doc = {
        "format": "gpt2-reference-v1",
        "description": "Reference outputs of a RANDOM-WEIGHT GPT-2 (exact architecture, not trained), made by tools/make_fixtures.py",
        "model": {"hparams": {**{k: hp[k] for k in ("n_vocab", "n_ctx", "n_embd", "n_head", "n_layer")}, "head_dim": hp["n_embd"] // hp["n_head"]},
                  "n_params": sum(p.numel() for p in model.transformer.parameters()), "seed": hp["seed"]},
        "generated_by": {"script": "tools/make_fixtures.py", "python": sys.version.split()[0], "torch": torch.__version__,
                         "transformers": transformers.__version__, "tensorflow": tensorflow.__version__,
                         "safetensors": safetensors.__version__, "numpy": np.__version__,
                         "dtype": "float32", "attn_implementation": model.config._attn_implementation, "device": "cpu"},
        "tensors": {
            "logits.<i>": "f32 [n_tokens, n_vocab]: logits at every position of prompt i",
            "hidden_states.<i>": "f32 [n_layer+1, n_tokens, n_embd]: HF output_hidden_states; [0] = wte[ids]+wpe[pos], [k] (1<=k<n_layer) = output of block h.{k-1}, [n_layer] = ln_f(output of the last block)",
        },
        "tolerances_suggested": {"logits_max_abs_diff": 1e-4, "hidden_states_max_abs_diff": 1e-4, "logprob_sum_abs_diff": 1e-3},
        "prompts": items,
    }
    with open(os.path.join(dir_, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    torch.set_num_threads(2)
    model_sets = {
        # A small model with the real vocabulary, a head count that is not a power of two, and n_ctx 32
        # so that a 22-token prompt gets close to the context limit.
        "tiny": {"n_vocab": 50257, "n_ctx": 32, "n_embd": 40, "n_head": 5, "n_layer": 2, "seed": 2024},
        # A very small model for file-format tests (a few KB per layout).
        "micro": {"n_vocab": 96, "n_ctx": 16, "n_embd": 16, "n_head": 2, "n_layer": 1, "seed": 7},
    }
    for name, hp in model_sets.items():
        out = os.path.join(FIXTURES, name)
        shutil.rmtree(out, ignore_errors=True)
        model = make_model(hp, hp["seed"])
        tensors = transformer_tensors(model)
        write_hf(os.path.join(out, "hf"), model, tensors)
        write_openai(os.path.join(out, "openai"), hp, tensors)
        if name == "micro":
            write_openai(os.path.join(out, "openai-sharded"), hp, tensors, shards=2)
            write_openai(os.path.join(out, "openai-f16"), hp, tensors, dtype="float16")
            prompts = [("ids_a", "", [1, 5, 9, 33, 2]), ("ids_b", "", [95, 0, 17, 17, 64, 3, 88, 41, 12]), ("single", "", [42])]
        else:
            prompts = [
                ("alan_turing", "Alan Turing theorized that computers would one day become", None),
                ("single_token", "The", None),
                ("unicode", "Café naïve — 日本語 👩\u200d💻!", None),
                ("empty_endoftext", "", None),
                ("long_near_nctx", "The lighthouse keeper had kept a logbook for thirty-one years, and every night he wrote down the", None),
            ]
        reference(out, model, hp, prompts)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
