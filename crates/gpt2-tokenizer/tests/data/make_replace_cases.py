"""Makes replace_cases.jsonl: byte strings and Python's bytes.decode("utf-8", errors="replace").

OpenAI's decoder turns token bytes into text with errors="replace"; these cases pin that
behaviour (one U+FFFD per maximal invalid subsequence) on adversarial random bytes:
truncated sequences, overlong forms, surrogates, bytes above U+10FFFF, stray
continuation bytes.

Run from the repository root: python3 crates/gpt2-tokenizer/tests/data/make_replace_cases.py
"""

import json
import os
import random

ROOT = os.path.dirname(os.path.abspath(__file__))
INTERESTING = [0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED,
               0xEE, 0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xF8, 0xFF, 0x41, 0x0A]


def main():
    rng = random.Random(99)
    with open(os.path.join(ROOT, "replace_cases.jsonl"), "w", encoding="utf-8") as out:
        for i in range(500):
            n = rng.randint(0, 12)
            data = bytes(rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randint(0, 255)
                         for _ in range(n))
            record = {"bytes": data.hex(), "text": data.decode("utf-8", errors="replace")}
            out.write(json.dumps(record, ensure_ascii=True) + "\n")


if __name__ == "__main__":
    main()
