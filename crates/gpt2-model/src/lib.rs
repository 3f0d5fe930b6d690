//! The GPT-2 transformer (work in progress).
