//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), as Cilium uses it:
//! a per-Service lookup table of `M` slots (M prime), each naming a backend.
//! The datapath hashes a flow's 5-tuple to a slot, so every node with the
//! same backends picks the same backend for a flow, and a backend change
//! moves few flows.
//!
//! Determinism: backends are identified by a stable key (their address),
//! sorted, and hashed with fixed FNV-1a variants, so two nodes (or two
//! agent runs) given the same backends build byte-identical tables whatever
//! order the backends arrived in.

use std::fmt;

/// Cilium's default table size: a prime, ~100× a typical backend count.
pub const DEFAULT_TABLE_SIZE: u32 = 16381;
/// The largest table size accepted (the next size Cilium offers is 131071).
pub const MAX_TABLE_SIZE: u32 = 131_071;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaglevError {
    NotPrime(u32),
    OutOfRange(u32),
    TooManyBackends(usize),
    ZeroWeight(String),
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaglevError::NotPrime(m) => write!(f, "table size {m} is not prime"),
            MaglevError::OutOfRange(m) => {
                write!(f, "table size {m} is outside 3..={MAX_TABLE_SIZE}")
            }
            MaglevError::TooManyBackends(n) => {
                write!(
                    f,
                    "{n} backends: a table holds at most 65535 (and fewer than its size)"
                )
            }
            MaglevError::ZeroWeight(k) => write!(f, "backend {k} has weight 0"),
        }
    }
}

impl std::error::Error for MaglevError {}

pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Checks a configured table size.
pub fn check_table_size(m: u32) -> Result<(), MaglevError> {
    if !(3..=MAX_TABLE_SIZE).contains(&m) {
        return Err(MaglevError::OutOfRange(m));
    }
    if !is_prime(m) {
        return Err(MaglevError::NotPrime(m));
    }
    Ok(())
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Final avalanche (splitmix64's): FNV's low bits are weak for keys
    // that differ only in their last bytes, like consecutive pod IPs.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

const SEED_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const SEED_SKIP: u64 = 0x84222325_cbf29ce4;

/// One backend: a stable key (e.g. `10.244.1.7:8080`) and a weight.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Backend {
    pub key: String,
    pub weight: u32,
}

/// Builds the table: `table[i]` is an index into `backends` sorted by key
/// (the order [`sorted`] returns). Weighted: in every round a backend
/// takes as many slots as its weight, so its share is weight / Σweights.
pub fn build(backends: &[Backend], m: u32) -> Result<Vec<u16>, MaglevError> {
    check_table_size(m)?;
    if backends.len() > usize::from(u16::MAX) || backends.len() >= m as usize {
        return Err(MaglevError::TooManyBackends(backends.len()));
    }
    if let Some(b) = backends.iter().find(|b| b.weight == 0) {
        return Err(MaglevError::ZeroWeight(b.key.clone()));
    }
    let order = sorted(backends);
    let m64 = u64::from(m);
    let perms: Vec<(u64, u64)> = order
        .iter()
        .map(|b| {
            let offset = fnv1a(SEED_OFFSET, b.key.as_bytes()) % m64;
            let skip = fnv1a(SEED_SKIP, b.key.as_bytes()) % (m64 - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut table = vec![u16::MAX; m as usize];
    if order.is_empty() {
        return Ok(Vec::new());
    }
    let mut next = vec![0u64; order.len()];
    let mut filled = 0usize;
    'fill: loop {
        for (i, b) in order.iter().enumerate() {
            for _ in 0..b.weight {
                let (offset, skip) = perms[i];
                // The backend's next preferred slot that is still free.
                let mut slot = ((offset + next[i] * skip) % m64) as usize;
                while table[slot] != u16::MAX {
                    next[i] += 1;
                    slot = ((offset + next[i] * skip) % m64) as usize;
                }
                table[slot] = i as u16;
                next[i] += 1;
                filled += 1;
                if filled == table.len() {
                    break 'fill;
                }
            }
        }
    }
    Ok(table)
}

/// The backends in table order (sorted by key, duplicates kept once).
pub fn sorted(backends: &[Backend]) -> Vec<Backend> {
    let mut v = backends.to_vec();
    v.sort();
    v.dedup_by(|a, b| a.key == b.key);
    v
}

/// The table of a frontend as the datapath reads it: for each of the `m`
/// entries, the slot number (1-based, in `backends` order, which is the
/// order the agent writes slots in) of the chosen backend. Backends are
/// keyed by `ip:port`, so the same backends give the same table anywhere.
pub fn slot_table(backends: &[crate::BackendAddr], m: u32) -> Result<Vec<u16>, MaglevError> {
    let keyed: Vec<Backend> = backends
        .iter()
        .map(|b| Backend {
            key: format!("{}:{}", b.ip, b.port),
            weight: 1,
        })
        .collect();
    let order = sorted(&keyed);
    let table = build(&keyed, m)?;
    // Position of each sorted backend among the slots.
    let slot_of: Vec<u16> = order
        .iter()
        .map(|b| {
            keyed
                .iter()
                .position(|k| k.key == b.key)
                .and_then(|i| u16::try_from(i + 1).ok())
                .unwrap_or(0)
        })
        .collect();
    Ok(table
        .into_iter()
        .map(|i| slot_of.get(usize::from(i)).copied().unwrap_or(0))
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn backends(n: usize) -> Vec<Backend> {
        (0..n)
            .map(|i| Backend {
                key: format!("10.244.{}.{}:8080", i / 250, i % 250 + 1),
                weight: 1,
            })
            .collect()
    }

    fn counts(table: &[u16], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in table {
            c[usize::from(i)] += 1;
        }
        c
    }

    #[test]
    fn sizes_are_checked() {
        assert!(check_table_size(16381).is_ok());
        assert!(check_table_size(65521).is_ok());
        assert_eq!(check_table_size(16384), Err(MaglevError::NotPrime(16384)));
        assert_eq!(check_table_size(1), Err(MaglevError::OutOfRange(1)));
        assert!(
            build(&backends(20), 19).is_err(),
            "more backends than slots"
        );
    }

    /// Equal weights: every backend gets ⌊M/N⌋ or ⌈M/N⌉ slots, as even as
    /// integers allow; hence within ±1% of M/N whenever M ≥ 100·N.
    #[test]
    fn every_backend_gets_its_share() {
        for m in [16381, 65521] {
            for n in [1, 2, 3, 10, 100, 163, 655, 1000] {
                if n as u32 >= m {
                    continue;
                }
                let t = build(&backends(n), m).unwrap();
                assert_eq!(t.len(), m as usize);
                let fair = f64::from(m) / n as f64;
                for (i, c) in counts(&t, n).into_iter().enumerate() {
                    assert!(
                        c == fair.floor() as usize || c == fair.ceil() as usize,
                        "M={m} N={n} backend {i}: {c} slots vs {fair:.1}"
                    );
                    if f64::from(m) >= 100.0 * n as f64 {
                        assert!((c as f64 - fair).abs() / fair <= 0.01);
                    }
                }
            }
        }
    }

    #[test]
    fn slot_tables_name_slots_in_the_agents_order() {
        let addr = |last: u8| crate::BackendAddr {
            ip: std::net::Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
            proto: crate::Protocol::Tcp,
        };
        // Slot order is numeric (9 before 10); key order is textual.
        let slots = [addr(9), addr(10), addr(11)];
        let t = slot_table(&slots, 16381).unwrap();
        assert!(t.iter().all(|s| (1..=3).contains(s)));
        let mut seen = [0usize; 4];
        for s in &t {
            seen[usize::from(*s)] += 1;
        }
        assert!(
            seen[1..].iter().all(|&c| c == 5460 || c == 5461),
            "{seen:?}"
        );
        assert!(slot_table(&[], 16381).unwrap().is_empty());
    }

    #[test]
    fn weights_set_the_share() {
        let mut b = backends(3);
        b[0].weight = 2;
        let t = build(&b, 16381).unwrap();
        let c = counts(&t, 3);
        let ratio = c[0] as f64 / c[1] as f64;
        assert!((ratio - 2.0).abs() < 0.02, "{c:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Same backends in any order, on any node: the same table.
        #[test]
        fn deterministic_whatever_the_order(n in 1usize..60, seed in any::<u64>()) {
            let b = backends(n);
            let mut shuffled = b.clone();
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
            prop_assert_eq!(build(&b, 16381).unwrap(), build(&shuffled, 16381).unwrap());
        }

        /// Removing one of N backends moves its own slots (1/N) plus a few
        /// more: ≤ 1.2/N of the table changes owner while M ≥ ~1000·N (the
        /// extra grows with N/M: see docs/benchmarks.md for measured values).
        #[test]
        fn removing_one_backend_moves_few_slots(n in 3usize..=16, gone in any::<prop::sample::Index>()) {
            let before_b = backends(n);
            let gone = gone.index(n);
            let after_b: Vec<Backend> =
                before_b.iter().enumerate().filter(|(i, _)| *i != gone).map(|(_, b)| b.clone()).collect();
            let before = build(&before_b, 16381).unwrap();
            let after = build(&after_b, 16381).unwrap();
            let key_before = sorted(&before_b);
            let key_after = sorted(&after_b);
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(x, y)| key_before[usize::from(**x)].key != key_after[usize::from(**y)].key)
                .count();
            let bound = 1.2 / n as f64 * 16381.0;
            prop_assert!(moved as f64 <= bound, "N={} moved {} > {:.0}", n, moved, bound);
        }
    }
}
