//! Maglev table build time for M = 16381 and 65521 with 10, 100, 1000
//! backends: what a backend change costs the agent per Maglev Service.
//! Run: `cargo bench -p sluice-core --bench maglev`.

use sluice_core::maglev::{build, Backend};

fn main() {
    divan::main();
}

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            key: format!("10.244.{}.{}:8080", i / 250, i % 250 + 1),
            weight: 1,
        })
        .collect()
}

#[divan::bench(args = [10, 100, 1000])]
fn m16381(bencher: divan::Bencher, n: usize) {
    let b = backends(n);
    bencher.bench(|| build(divan::black_box(&b), 16381));
}

#[divan::bench(args = [10, 100, 1000])]
fn m65521(bencher: divan::Bencher, n: usize) {
    let b = backends(n);
    bencher.bench(|| build(divan::black_box(&b), 65521));
}
