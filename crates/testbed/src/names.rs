//! Run ids and the names derived from them. Everything starts with `slc` so
//! other sessions on the same kernel (and `down_leftovers`) can tell ours apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub const PREFIX: &str = "slc";

/// `slc` + 6 hex digits, e.g. `slc3fa01c`.
pub fn new_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seed = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{PREFIX}{:06x}", splitmix(seed) & 0xff_ffff)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// True for names `new_run_id` produces.
pub fn is_run_id(s: &str) -> bool {
    s.len() == PREFIX.len() + 6
        && s.starts_with(PREFIX)
        && s[PREFIX.len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// The third octet of the sandbox's private addresses, derived from the id
/// so two sandboxes side by side are easy to tell apart in captures.
pub fn subnet_octet(run_id: &str) -> u8 {
    let hex = run_id.get(PREFIX.len()..PREFIX.len() + 2).unwrap_or("01");
    let v = u8::from_str_radix(hex, 16).unwrap_or(1);
    // 1..=254: avoid .0 and .255, which read like network/broadcast.
    v % 254 + 1
}

pub fn node_netns(run_id: &str) -> String {
    format!("{run_id}-node")
}

pub fn outside_netns(run_id: &str) -> String {
    format!("{run_id}-out")
}

pub fn pod_netns(run_id: &str, n: u32) -> String {
    format!("{run_id}-p{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_well_formed_and_distinct() {
        let a = new_run_id();
        let b = new_run_id();
        assert!(is_run_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_run_id("slcXYZ123"));
        assert!(!is_run_id("abc123456"));
        assert!(node_netns(&a).len() <= 15);
        assert!(pod_netns(&a, 999).len() <= 15);
    }

    #[test]
    fn subnet_octet_is_in_range() {
        assert_eq!(subnet_octet("slc000000"), 1);
        assert_eq!(subnet_octet("slcff0000"), 2);
        assert!((1..=254).contains(&subnet_octet("slcfe0000")));
    }
}
