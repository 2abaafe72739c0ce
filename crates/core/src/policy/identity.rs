//! Security identities: the numbers the datapath matches peers by.
//!
//! A pod's identity is a function of its labels and its namespace's labels
//! only, so pods that look alike to every selector share one number, and
//! the number is the same on every node and after every restart: it is
//! derived from a stable hash of the canonical label list, not from
//! allocation order. The same holds for the CIDR identities that stand for
//! the prefixes policies name.
//!
//! Hash collisions between different label sets are resolved by linear
//! probing in sorted order of the canonical labels, so a given set of
//! label sets always gets the same numbers; a collision chain is the only
//! way adding a pod can move another pod's identity, and with 2^24 slots it
//! is rare.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Wildcard peer in policy keys; never an identity of anything.
pub const ID_ANY: u32 = 0;
pub const ID_HOST: u32 = 1;
/// Anything outside the cluster that no CIDR identity covers.
pub const ID_WORLD: u32 = 2;
pub const ID_HEALTH: u32 = 4;
pub const ID_REMOTE_NODE: u32 = 6;

/// Pod identities are `POD_ID_MIN..CIDR_ID_FLAG`.
pub const POD_ID_MIN: u32 = 256;
/// CIDR identities have this bit set: `CIDR_ID_FLAG..2^25`.
pub const CIDR_ID_FLAG: u32 = 1 << 24;
const POD_ID_SPACE: u32 = CIDR_ID_FLAG - POD_ID_MIN;
const CIDR_ID_SPACE: u32 = 1 << 24;

/// Cilium's label for the pod's namespace (source prefix `k8s:` omitted).
pub const POD_NAMESPACE_KEY: &str = "io.kubernetes.pod.namespace";
/// Cilium's prefix for the namespace's labels (source prefix omitted).
pub const NAMESPACE_LABELS_KEY_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// Source prefix of the labels Sluice derives (not the pod's own).
const K8S_SOURCE: &str = "k8s:";
/// Set by the API server on every Namespace, to its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IdentityKind {
    Reserved,
    Pod,
    Cidr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInfo {
    pub id: u32,
    pub kind: IdentityKind,
    /// Canonical, sorted `key=value` (pods), `cidr:<prefix>`, `reserved:<name>`.
    pub labels: Vec<String>,
}

/// The labels Cilium selectors match against: the pod's own labels, the
/// namespace's labels under [`NAMESPACE_LABELS_KEY_PREFIX`] and the
/// namespace name under [`POD_NAMESPACE_KEY`]. The derived ones are written
/// last so a pod cannot claim another namespace with a label of its own.
pub fn selector_labels(
    pod_labels: &BTreeMap<String, String>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = pod_labels.clone();
    for (k, v) in namespace_labels {
        out.insert(format!("{NAMESPACE_LABELS_KEY_PREFIX}{k}"), v.clone());
    }
    out.insert(POD_NAMESPACE_KEY.to_string(), namespace.to_string());
    out
}

/// Canonical identity labels: pod labels as `key=value`, derived labels
/// with the `k8s:` source prefix (a character pod label keys cannot hold,
/// so the two never collide), sorted.
pub fn identity_labels(
    pod_labels: &BTreeMap<String, String>,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out: Vec<String> = pod_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for (k, v) in namespace_labels {
        out.push(format!("{K8S_SOURCE}{NAMESPACE_LABELS_KEY_PREFIX}{k}={v}"));
    }
    out.push(format!("{K8S_SOURCE}{POD_NAMESPACE_KEY}={namespace}"));
    out.sort();
    out
}

/// 64-bit FNV-1a: tiny, stable across platforms and Rust versions (unlike
/// `std`'s hashers, which are allowed to change).
pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// First free id at or after the hashed slot, wrapping inside the space.
/// `None` only when all 2^24 slots are taken.
fn place(taken: &mut BTreeSet<u32>, base: u32, space: u32, hash: u64) -> Option<u32> {
    // The remainder is < space <= 2^24, so it fits.
    let start = (hash % u64::from(space)) as u32;
    (0..space)
        .map(|i| base + (start + i) % space)
        .find(|&id| taken.insert(id))
}

fn reserved(id: u32, name: &str) -> IdentityInfo {
    IdentityInfo {
        id,
        kind: IdentityKind::Reserved,
        labels: vec![format!("reserved:{name}")],
    }
}

/// Identities of one compile: every pod label set and every policy prefix.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    pods: BTreeMap<Vec<String>, u32>,
    cidrs: BTreeMap<Ipv4Net, u32>,
}

impl Identities {
    /// Allocates in sorted order, so the result depends only on the sets.
    /// The /0 prefix is not a CIDR identity: it is [`ID_WORLD`].
    pub fn allocate(
        label_sets: impl IntoIterator<Item = Vec<String>>,
        prefixes: impl IntoIterator<Item = Ipv4Net>,
    ) -> Self {
        let label_sets: BTreeSet<Vec<String>> = label_sets.into_iter().collect();
        let prefixes: BTreeSet<Ipv4Net> = prefixes
            .into_iter()
            .map(|p| p.trunc())
            .filter(|p| p.prefix_len() > 0)
            .collect();
        let mut out = Self::default();
        let mut taken = BTreeSet::new();
        for labels in label_sets {
            let hash = fnv1a64(labels.join("\n").as_bytes());
            if let Some(id) = place(&mut taken, POD_ID_MIN, POD_ID_SPACE, hash) {
                out.pods.insert(labels, id);
            }
        }
        let mut taken = BTreeSet::new();
        for prefix in prefixes {
            let hash = fnv1a64(prefix.to_string().as_bytes());
            if let Some(id) = place(&mut taken, CIDR_ID_FLAG, CIDR_ID_SPACE, hash) {
                out.cidrs.insert(prefix, id);
            }
        }
        out
    }

    pub fn pod(&self, labels: &[String]) -> Option<u32> {
        self.pods.get(labels).copied()
    }

    /// The identity standing for `prefix`; [`ID_WORLD`] for /0.
    pub fn cidr(&self, prefix: &Ipv4Net) -> Option<u32> {
        if prefix.prefix_len() == 0 {
            return Some(ID_WORLD);
        }
        self.cidrs.get(&prefix.trunc()).copied()
    }

    /// Every CIDR identity with its prefix, in prefix order.
    pub fn cidrs(&self) -> impl Iterator<Item = (Ipv4Net, u32)> + '_ {
        self.cidrs.iter().map(|(p, &id)| (*p, id))
    }

    /// Every pod identity, in label order.
    pub fn pods(&self) -> impl Iterator<Item = u32> + '_ {
        self.pods.values().copied()
    }

    /// Everything allocated plus the reserved identities (not [`ID_ANY`]).
    pub fn infos(&self) -> BTreeMap<u32, IdentityInfo> {
        let mut out: BTreeMap<u32, IdentityInfo> = [
            reserved(ID_HOST, "host"),
            reserved(ID_WORLD, "world"),
            reserved(ID_HEALTH, "health"),
            reserved(ID_REMOTE_NODE, "remote-node"),
        ]
        .into_iter()
        .map(|i| (i.id, i))
        .collect();
        for (labels, &id) in &self.pods {
            out.insert(
                id,
                IdentityInfo {
                    id,
                    kind: IdentityKind::Pod,
                    labels: labels.clone(),
                },
            );
        }
        for (prefix, &id) in &self.cidrs {
            out.insert(
                id,
                IdentityInfo {
                    id,
                    kind: IdentityKind::Cidr,
                    labels: vec![format!("cidr:{prefix}")],
                },
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn canonical_labels_are_sorted_and_prefixed() {
        let got = identity_labels(
            &labels(&[("app", "web"), ("tier", "a")]),
            "x",
            &labels(&[("team", "blue")]),
        );
        assert_eq!(
            got,
            [
                "app=web",
                "k8s:io.cilium.k8s.namespace.labels.team=blue",
                "k8s:io.kubernetes.pod.namespace=x",
                "tier=a",
            ]
        );
    }

    #[test]
    fn pod_label_cannot_fake_the_namespace() {
        let got = selector_labels(&labels(&[(POD_NAMESPACE_KEY, "evil")]), "x", &labels(&[]));
        assert_eq!(got[POD_NAMESPACE_KEY], "x");
    }

    #[test]
    fn fnv_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn ids_are_in_their_ranges_and_independent_of_input_order() {
        let a = vec!["app=a".to_string()];
        let b = vec!["app=b".to_string()];
        let p: Ipv4Net = "10.0.0.0/8".parse().expect("cidr");
        let one = Identities::allocate([a.clone(), b.clone()], [p]);
        let two = Identities::allocate([b.clone(), a.clone()], [p, p]);
        assert_eq!(one.infos(), two.infos());
        let ida = one.pod(&a).expect("a");
        assert!((POD_ID_MIN..CIDR_ID_FLAG).contains(&ida));
        let idp = one.cidr(&p).expect("p");
        assert!(idp & CIDR_ID_FLAG != 0 && idp < 2 * CIDR_ID_FLAG);
        assert_eq!(
            one.cidr(&"0.0.0.0/0".parse().expect("cidr")),
            Some(ID_WORLD)
        );
    }

    #[test]
    fn collisions_probe_to_the_next_slot() {
        let mut taken = BTreeSet::new();
        assert_eq!(place(&mut taken, 256, 10, 9), Some(265));
        assert_eq!(place(&mut taken, 256, 10, 9), Some(256));
        assert_eq!(place(&mut taken, 256, 10, 19), Some(257));
        for _ in 0..7 {
            assert!(place(&mut taken, 256, 10, 0).is_some());
        }
        assert_eq!(place(&mut taken, 256, 10, 0), None);
    }
}
