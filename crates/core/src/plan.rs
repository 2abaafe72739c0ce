//! Map-level operations, their ordering, and a mirror of the applied maps.
//!
//! Ordering rules (so a packet never sees a half state):
//! 1. backends and rev-NAT entries are written before any slot/master that
//!    names them;
//! 2. a service grows by writing the new slots, then the master with the
//!    larger count; it shrinks by writing the master with the smaller count,
//!    then deleting the unused slots; it is deleted master first;
//! 3. backends and rev-NAT entries are deleted last, when nothing names them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::compile::{BackendAddr, DesiredState, Frontend};

/// Master flag: this frontend is a NodePort (matches every node address).
pub const FLAG_NODE_PORT: u8 = 1;
/// `LB_FLAG_AFFINITY`: new flows of a client stick to its last backend.
pub const FLAG_AFFINITY: u8 = 2;
/// `LB_FLAG_DROP_NO_BACKEND`: with no backend, drop instead of refusing
/// (internalTrafficPolicy Local with no local endpoint, as kube-proxy does).
pub const FLAG_DROP_NO_BACKEND: u8 = 4;
/// `LB_FLAG_MAGLEV`: new flows pick their backend from the frontend's
/// Maglev table (`sl_maglev`), by a hash of the flow.
pub const FLAG_MAGLEV: u8 = 8;
/// `LB_FLAG_EXTERNAL`: a NodePort, LB IP or externalIP (externalTrafficPolicy
/// applies; always masqueraded under eTP Cluster).
pub const FLAG_EXTERNAL: u8 = 16;
/// `LB_FLAG_ETP_LOCAL`: external clients use the frontend's scope-External
/// entry (this node's endpoints, client address kept).
pub const FLAG_ETP_LOCAL: u8 = 32;
/// `LB_FLAG_SOURCE_RANGES`: loadBalancerSourceRanges apply (`sl_src_ranges`).
pub const FLAG_SOURCE_RANGES: u8 = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapOp {
    UpsertBackend {
        id: u32,
        addr: BackendAddr,
    },
    DeleteBackend {
        id: u32,
    },
    UpsertRevNat {
        id: u32,
        frontend: Frontend,
    },
    DeleteRevNat {
        id: u32,
    },
    UpsertSlot {
        frontend: Frontend,
        slot: u16,
        backend_id: u32,
    },
    DeleteSlot {
        frontend: Frontend,
        slot: u16,
    },
    UpsertMaster {
        frontend: Frontend,
        count: u16,
        rev_nat_id: u32,
        flags: u8,
        affinity_timeout: u32,
    },
    DeleteMaster {
        frontend: Frontend,
    },
}

/// Value of the slot-0 entry of a frontend in the service map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Master {
    pub count: u16,
    pub rev_nat_id: u32,
    pub flags: u8,
    /// Session affinity timeout in seconds; 0 = none (FLAG_AFFINITY unset).
    #[serde(default)]
    pub affinity_timeout: u32,
}

/// What the maps hold, at the granularity of [`MapOp`]. The agent fills it
/// by reading the pinned maps after a restart; tests use it as a fake datapath.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    pub masters: BTreeMap<Frontend, Master>,
    /// Keyed (frontend, slot), slot >= 1.
    pub slots: BTreeMap<(Frontend, u16), u32>,
    pub backends: BTreeMap<u32, BackendAddr>,
    pub rev_nat: BTreeMap<u32, Frontend>,
}

impl AppliedState {
    /// The maps exactly as `desired` describes them.
    pub fn from_desired(desired: &DesiredState) -> Self {
        let mut st = Self {
            backends: desired.backends.clone(),
            ..Self::default()
        };
        for (fe, svc) in &desired.services {
            st.masters.insert(*fe, svc.master());
            st.rev_nat.insert(svc.rev_nat_id, *fe);
            for (i, &id) in svc.backend_ids.iter().enumerate() {
                st.slots.insert((*fe, slot_number(i)), id);
            }
        }
        st
    }

    pub fn apply(&mut self, op: &MapOp) {
        match *op {
            MapOp::UpsertBackend { id, addr } => {
                self.backends.insert(id, addr);
            }
            MapOp::DeleteBackend { id } => {
                self.backends.remove(&id);
            }
            MapOp::UpsertRevNat { id, frontend } => {
                self.rev_nat.insert(id, frontend);
            }
            MapOp::DeleteRevNat { id } => {
                self.rev_nat.remove(&id);
            }
            MapOp::UpsertSlot {
                frontend,
                slot,
                backend_id,
            } => {
                self.slots.insert((frontend, slot), backend_id);
            }
            MapOp::DeleteSlot { frontend, slot } => {
                self.slots.remove(&(frontend, slot));
            }
            MapOp::UpsertMaster {
                frontend,
                count,
                rev_nat_id,
                flags,
                affinity_timeout,
            } => {
                self.masters.insert(
                    frontend,
                    Master {
                        count,
                        rev_nat_id,
                        flags,
                        affinity_timeout,
                    },
                );
            }
            MapOp::DeleteMaster { frontend } => {
                self.masters.remove(&frontend);
            }
        }
    }

    /// The state a packet could observe: every master's slots 1..=count
    /// exist, every such slot's backend exists, every master's rev-NAT entry
    /// exists. Returns one message per violation (empty = consistent).
    pub fn invariant_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (fe, m) in &self.masters {
            if !self.rev_nat.contains_key(&m.rev_nat_id) {
                out.push(format!("{fe}: rev-NAT {} missing", m.rev_nat_id));
            }
            for slot in 1..=m.count {
                match self.slots.get(&(*fe, slot)) {
                    None => out.push(format!("{fe}: slot {slot} of {} missing", m.count)),
                    Some(id) if !self.backends.contains_key(id) => {
                        out.push(format!("{fe}: slot {slot}: backend {id} missing"))
                    }
                    Some(_) => {}
                }
            }
        }
        out
    }

    /// Existing slots of one frontend as a dense vector (index = slot - 1).
    fn slots_of(&self, fe: &Frontend) -> Vec<Option<u32>> {
        let mut v = Vec::new();
        for (&(_, slot), &id) in self.slots.range((*fe, 1)..=(*fe, u16::MAX)) {
            let i = usize::from(slot) - 1;
            if v.len() <= i {
                v.resize(i + 1, None);
            }
            v[i] = Some(id);
        }
        v
    }
}

/// Emits the ops that take one frontend from `old` to `new` (see module
/// docs for the order). `old_slots[i]` is slot `i + 1`.
pub(crate) fn plan_frontend(
    fe: &Frontend,
    old_master: Option<Master>,
    old_slots: &[Option<u32>],
    new: Option<(Master, &[u32])>,
    out: &mut Vec<MapOp>,
) {
    let Some((master, slots)) = new else {
        if old_master.is_some() {
            out.push(MapOp::DeleteMaster { frontend: *fe });
        }
        delete_slots_from(fe, old_slots, 0, out);
        return;
    };
    for (i, &backend_id) in slots.iter().enumerate() {
        if old_slots.get(i).copied().flatten() != Some(backend_id) {
            out.push(MapOp::UpsertSlot {
                frontend: *fe,
                slot: slot_number(i),
                backend_id,
            });
        }
    }
    if old_master != Some(master) {
        out.push(MapOp::UpsertMaster {
            frontend: *fe,
            count: master.count,
            rev_nat_id: master.rev_nat_id,
            flags: master.flags,
            affinity_timeout: master.affinity_timeout,
        });
    }
    delete_slots_from(fe, old_slots, slots.len(), out);
}

fn delete_slots_from(fe: &Frontend, old_slots: &[Option<u32>], from: usize, out: &mut Vec<MapOp>) {
    for (i, s) in old_slots.iter().enumerate().skip(from) {
        if s.is_some() {
            out.push(MapOp::DeleteSlot {
                frontend: *fe,
                slot: slot_number(i),
            });
        }
    }
}

/// Slot numbers start at 1; counts are capped at `u16::MAX` by the compiler.
fn slot_number(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

/// Full resync: the ops that turn `applied` (read back from the maps) into
/// `desired`, touching only entries that differ.
pub fn plan_full(desired: &DesiredState, applied: &AppliedState) -> Vec<MapOp> {
    let mut ops = Vec::new();
    for (&id, &addr) in &desired.backends {
        if applied.backends.get(&id) != Some(&addr) {
            ops.push(MapOp::UpsertBackend { id, addr });
        }
    }
    let mut wanted_rev_nat = BTreeSet::new();
    for (fe, svc) in &desired.services {
        wanted_rev_nat.insert(svc.rev_nat_id);
        if applied.rev_nat.get(&svc.rev_nat_id) != Some(fe) {
            ops.push(MapOp::UpsertRevNat {
                id: svc.rev_nat_id,
                frontend: *fe,
            });
        }
    }
    let mut frontends: BTreeSet<Frontend> = desired.services.keys().copied().collect();
    frontends.extend(applied.masters.keys().copied());
    frontends.extend(applied.slots.keys().map(|(fe, _)| *fe));
    // Frontends that go away or shrink first: a resync after "map full"
    // must free entries before it writes new ones, or it can never finish.
    // Each frontend's ops are independent of the others', so this order is
    // as safe as any.
    let frees_entries = |fe: &Frontend| match desired.services.get(fe) {
        None => true,
        Some(s) => s.backend_ids.len() < applied.slots_of(fe).iter().flatten().count(),
    };
    let (first, rest): (Vec<Frontend>, Vec<Frontend>) =
        frontends.into_iter().partition(frees_entries);
    for fe in first.iter().chain(rest.iter()) {
        let old_slots = applied.slots_of(fe);
        let new = desired
            .services
            .get(fe)
            .map(|s| (s.master(), s.backend_ids.as_slice()));
        plan_frontend(
            fe,
            applied.masters.get(fe).copied(),
            &old_slots,
            new,
            &mut ops,
        );
    }
    for &id in applied.backends.keys() {
        if !desired.backends.contains_key(&id) {
            ops.push(MapOp::DeleteBackend { id });
        }
    }
    for &id in applied.rev_nat.keys() {
        if !wanted_rev_nat.contains(&id) {
            ops.push(MapOp::DeleteRevNat { id });
        }
    }
    ops
}
