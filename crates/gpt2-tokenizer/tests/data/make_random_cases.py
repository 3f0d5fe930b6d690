"""Makes random_cases.jsonl: random texts with the ids of OpenAI's GPT-2 encoder.

The ids come from tools/gpt2_encoder.py (OpenAI's encoder.py algorithm on the
Python `regex` module). Texts are random concatenations of fragments that hit every
branch of GPT-2's pattern (contractions, every Unicode whitespace character, letters,
numbers, punctuation, emoji, combining marks, `<|endoftext|>`) and random code points.
Random code points are limited to those assigned in Python's own `unicodedata`
(Unicode 14.0): whether later additions count as letters depends on the Unicode
version of the regex engine (see the crate docs), which these cases leave out.

Run from the repository root: python3 crates/gpt2-tokenizer/tests/data/make_random_cases.py
"""

import json
import os
import random
import sys
import unicodedata

ROOT = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "..", "..", "..", "..", "tools"))
import gpt2_encoder  # noqa: E402

FRAGMENTS = [
    " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f",
    "\x85", "\xa0", "\u1680", "\u2000", "\u2007", "\u200a", "\u2028", "\u2029", "\u202f",
    "\u205f", "\u3000", "\u180e", "\u200b", "\ufeff", "a", "Ab", "é", "日本", "'", "'s", "'t",
    "'re", "'ve", "'m", "'ll", "'d", "'M", "'S", "1", "23", " 456", "½", "²", "٣", "Ⅻ", "!",
    "?.", "...", "👋", "👋🏽", "\u0301", "\x00", "<|endoftext|>", "hello", " world", "ß", "İ",
    "ǅ", "ﬁ", "\U0001D400", "\u0345", "\u20dd", "한국어", "ไทย", "عربى", "\U0010FFFF",
]


def random_char(rng):
    while True:
        code = rng.randint(0, 0x10FFFF) if rng.random() < 0.5 else rng.randint(0, 0x2FFF)
        if 0xD800 <= code < 0xE000:
            continue
        c = chr(code)
        if unicodedata.category(c) != "Cn":
            return c


def main():
    rng = random.Random(20240601)
    out_path = os.path.join(ROOT, "random_cases.jsonl")
    with open(out_path, "w", encoding="utf-8") as out:
        for i in range(3000):
            parts = []
            for _ in range(rng.randint(0, 30)):
                parts.append(rng.choice(FRAGMENTS) if rng.random() < 0.7 else random_char(rng))
            text = "".join(parts)
            record = {"id": f"rand-{i:04d}", "text": text, "ids": gpt2_encoder.encode(text)}
            out.write(json.dumps(record, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
