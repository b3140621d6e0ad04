//! Quiver's benchmarks live in this crate's bench targets; the library itself is empty.
//!
//! Each bench measures alternatives side by side in one run, so results read as ratios on the
//! same machine: `cargo bench -p quiver-benches`.
