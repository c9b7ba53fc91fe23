//! Benchmarks live in `benches/benches/*.rs`; run them with `cargo bench -p zipserv-benches`.
