//! Model downloads (work in progress).
