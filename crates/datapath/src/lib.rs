//! Kernel-facing side.
