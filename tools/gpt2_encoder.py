"""GPT-2's byte-level BPE encoder, as OpenAI's gpt-2 `src/encoder.py` defines it (re-typed; needs `regex`).

Used only by tools/make_fixtures.py to turn the reference prompts into ids with OpenAI's algorithm.
"""

import json
import os

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_DIR = os.environ.get("GPT2_VOCAB_DIR", os.path.join(os.path.dirname(HERE), "crates", "gpt2-tokenizer", "data"))

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _load():
    with open(os.path.join(VOCAB_DIR, "encoder.json"), encoding="utf-8") as f:
        encoder = json.load(f)
    with open(os.path.join(VOCAB_DIR, "vocab.bpe"), encoding="utf-8") as f:
        merges = [tuple(line.split()) for line in f.read().split("\n")[1:-1]]
    return encoder, {m: r for r, m in enumerate(merges)}


ENCODER, RANKS = _load()
BYTE_ENCODER = bytes_to_unicode()


def bpe(token):
    word = tuple(token)
    while len(word) > 1:
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        best = min(pairs, key=lambda p: RANKS.get(p, float("inf")))
        if best not in RANKS:
            break
        first, second = best
        out, i = [], 0
        while i < len(word):
            if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                out.append(first + second)
                i += 2
            else:
                out.append(word[i])
                i += 1
        word = tuple(out)
    return word


def encode(text):
    ids = []
    for piece in regex.findall(PAT, text):
        token = "".join(BYTE_ENCODER[b] for b in piece.encode("utf-8"))
        ids.extend(ENCODER[t] for t in bpe(token))
    return ids
