//! Pure logic: no I/O, no kernel.
