//! GPT-2 weights (work in progress).
