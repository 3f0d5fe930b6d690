//! GPT-2's byte-level BPE tokenizer (work in progress).
