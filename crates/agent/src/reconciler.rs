//! The only writer of the datapath maps.
//!
//! It applies the compiler's ordered [`MapOp`]s one by one and mirrors what
//! the maps hold in an [`AppliedState`]. A failed write (a full map) stops
//! the batch there: every prefix of a plan is a consistent state, so the
//! maps stay consistent and nothing already programmed is lost; the agent
//! retries later with a full diff against the mirror.

use sluice_core::{AppliedState, BackendAddr, Frontend, FrontendScope, MapOp, Master, Protocol};
use sluice_datapath::maps::{BackendEntry, FrontendKey, ServiceRow};
use sluice_datapath::{LbMaps, MapsError};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("map write failed after {applied} of {total} operations: {source}")]
    Write {
        applied: usize,
        total: usize,
        source: MapsError,
    },
    #[error("map {map} holds an entry the agent cannot interpret: {detail}")]
    Corrupt { map: &'static str, detail: String },
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// The maps' view of a frontend.
pub fn frontend_key(f: &Frontend) -> FrontendKey {
    FrontendKey {
        ip: f.ip,
        port: f.port,
        proto: f.proto.as_u8(),
        scope: f.scope.as_u8(),
    }
}

fn frontend_of(k: &FrontendKey) -> Result<Frontend, ReconcileError> {
    Ok(Frontend {
        ip: k.ip,
        port: k.port,
        proto: protocol(k.proto)?,
        scope: FrontendScope::from_u8(k.scope).ok_or_else(|| ReconcileError::Corrupt {
            map: "sl_services",
            detail: format!("unknown frontend scope {}", k.scope),
        })?,
    })
}

fn protocol(p: u8) -> Result<Protocol, ReconcileError> {
    Protocol::from_u8(p).ok_or_else(|| ReconcileError::Corrupt {
        map: "sl_services",
        detail: format!("unknown IP protocol {p}"),
    })
}

fn backend_entry(b: &BackendAddr) -> BackendEntry {
    BackendEntry {
        ip: b.ip,
        port: b.port,
        proto: b.proto.as_u8(),
    }
}

pub struct Reconciler {
    maps: LbMaps,
    applied: AppliedState,
    write_errors: u64,
}

impl Reconciler {
    /// Opens the pinned maps and reads back what they hold, so a restarted
    /// agent knows the IDs in use and writes only what differs.
    pub fn open(maps: LbMaps) -> Result<Self, ReconcileError> {
        let applied = read_applied(&maps)?;
        Ok(Self {
            maps,
            applied,
            write_errors: 0,
        })
    }

    pub fn applied(&self) -> &AppliedState {
        &self.applied
    }

    pub fn maps(&self) -> &LbMaps {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut LbMaps {
        &mut self.maps
    }

    pub fn write_errors(&self) -> u64 {
        self.write_errors
    }

    /// Applies `ops` in order; returns how many were written.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<usize, ReconcileError> {
        for (i, op) in ops.iter().enumerate() {
            if let Err(source) = self.write(op) {
                self.write_errors += 1;
                return Err(ReconcileError::Write {
                    applied: i,
                    total: ops.len(),
                    source,
                });
            }
            self.applied.apply(op);
        }
        Ok(ops.len())
    }

    fn write(&mut self, op: &MapOp) -> Result<(), MapsError> {
        let m = &mut self.maps;
        match op {
            MapOp::UpsertBackend { id, addr } => m.upsert_backend(*id, backend_entry(addr)),
            MapOp::DeleteBackend { id } => m.delete_backend(*id),
            MapOp::UpsertRevNat { id, frontend } => m.upsert_revnat(*id, frontend_key(frontend)),
            MapOp::DeleteRevNat { id } => m.delete_revnat(*id),
            MapOp::UpsertSlot {
                frontend,
                slot,
                backend_id,
            } => m.upsert_slot(frontend_key(frontend), *slot, *backend_id),
            MapOp::DeleteSlot { frontend, slot } => {
                m.delete_service_entry(frontend_key(frontend), *slot)
            }
            MapOp::UpsertMaster {
                frontend,
                count,
                rev_nat_id,
                flags,
                affinity_timeout,
            } => m.upsert_master(
                frontend_key(frontend),
                *count,
                *rev_nat_id,
                *flags,
                *affinity_timeout,
            ),
            MapOp::DeleteMaster { frontend } => m.delete_service_entry(frontend_key(frontend), 0),
        }
    }
}

/// Reads the pinned maps into the compiler's mirror type.
pub fn read_applied(maps: &LbMaps) -> Result<AppliedState, ReconcileError> {
    let mut st = AppliedState::default();
    for row in maps.service_rows()? {
        match row {
            ServiceRow::Master {
                frontend,
                count,
                rev_nat_id,
                flags,
                affinity_timeout,
            } => {
                st.masters.insert(
                    frontend_of(&frontend)?,
                    Master {
                        count,
                        rev_nat_id,
                        flags,
                        affinity_timeout,
                    },
                );
            }
            ServiceRow::Slot {
                frontend,
                slot,
                backend_id,
            } => {
                st.slots.insert((frontend_of(&frontend)?, slot), backend_id);
            }
        }
    }
    for (id, b) in maps.backend_rows()? {
        st.backends.insert(
            id,
            BackendAddr {
                ip: b.ip,
                port: b.port,
                proto: protocol(b.proto)?,
            },
        );
    }
    for (id, f) in maps.revnat_rows()? {
        st.rev_nat.insert(id, frontend_of(&f)?);
    }
    Ok(st)
}
