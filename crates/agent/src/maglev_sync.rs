//! Writes the Maglev tables of the frontends that use Maglev (`sl_maglev`).
//!
//! A table names slot numbers, so it follows the Service reconciler: after
//! each plan, the tables of the frontends the plan touched are rebuilt
//! (`sluice_core::maglev::slot_table`, ~0.5 ms at M = 16381) and only the
//! chunks that changed are written — Maglev moves few entries when a
//! backend changes. While a table and its slots disagree (between the two
//! writes) the datapath ignores entries past the master's count and picks
//! at random for them: every flow still gets a live backend.

use sluice_core::maglev::slot_table;
use sluice_core::{DesiredState, Frontend};
use sluice_datapath::maps::MAGLEV_CHUNK;
use sluice_datapath::{MaglevMap, MapsError};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub struct MaglevSync {
    map: MaglevMap,
    table_size: u32,
    /// Frontend → (rev-NAT id, table) as written.
    applied: BTreeMap<Frontend, (u32, Vec<u16>)>,
    /// The map's content is unknown (start): reconcile everything once.
    full: bool,
}

impl MaglevSync {
    pub fn open(pin_dir: &Path, table_size: u32) -> Result<Self, MapsError> {
        Ok(Self {
            map: MaglevMap::open(pin_dir)?,
            table_size,
            applied: BTreeMap::new(),
            full: true,
        })
    }

    /// Brings the tables of `touched` frontends (all of them after start)
    /// in line with `desired`. Returns the number of chunk writes.
    pub fn sync(
        &mut self,
        desired: &DesiredState,
        touched: BTreeSet<Frontend>,
    ) -> Result<usize, MapsError> {
        let mut writes = 0;
        let touched: BTreeSet<Frontend> = if self.full {
            // Whatever an earlier agent left: chunks of frontends that no
            // longer use Maglev go; the others are rewritten below.
            let keep: BTreeSet<u32> = desired
                .services
                .values()
                .filter(|d| d.maglev)
                .map(|d| d.rev_nat_id)
                .collect();
            for (rev_nat_id, chunk) in self.map.keys()? {
                if !keep.contains(&rev_nat_id) {
                    self.map.delete_chunk(rev_nat_id, chunk)?;
                    writes += 1;
                }
            }
            desired.services.keys().copied().collect()
        } else {
            touched
        };
        for fe in touched {
            let want = desired.services.get(&fe).filter(|d| d.maglev).map(|d| {
                let backends: Vec<_> = d
                    .backend_ids
                    .iter()
                    .filter_map(|id| desired.backends.get(id).copied())
                    .collect();
                (d.rev_nat_id, backends)
            });
            writes += self.sync_one(fe, want)?;
        }
        self.full = false;
        Ok(writes)
    }

    /// After a failed write: reconcile everything on the next sync.
    pub fn mark_full(&mut self) {
        self.full = true;
    }

    fn sync_one(
        &mut self,
        fe: Frontend,
        want: Option<(u32, Vec<sluice_core::BackendAddr>)>,
    ) -> Result<usize, MapsError> {
        let mut writes = 0;
        let old = self.applied.remove(&fe);
        let Some((rev_nat_id, backends)) = want else {
            if let Some((rev, table)) = old {
                for chunk in 0..table.len().div_ceil(MAGLEV_CHUNK) {
                    self.map.delete_chunk(rev, chunk as u32)?;
                    writes += 1;
                }
            }
            return Ok(writes);
        };
        let table = match slot_table(&backends, self.table_size) {
            Ok(t) => t,
            Err(e) => {
                // Too many backends for the table: random selection serves
                // the frontend (no table, so the datapath falls back).
                tracing::warn!(frontend = %fe, error = %e, "no Maglev table");
                Vec::new()
            }
        };
        let old_table = match &old {
            Some((rev, t)) if *rev == rev_nat_id => t.as_slice(),
            _ => &[],
        };
        let chunks = table.len().div_ceil(MAGLEV_CHUNK);
        for c in 0..chunks {
            let new = &table[c * MAGLEV_CHUNK..((c + 1) * MAGLEV_CHUNK).min(table.len())];
            let was =
                old_table.get(c * MAGLEV_CHUNK..((c + 1) * MAGLEV_CHUNK).min(old_table.len()));
            if was != Some(new) {
                self.map.upsert_chunk(rev_nat_id, c as u32, new)?;
                writes += 1;
            }
        }
        // A shorter table (none) or another rev-NAT id: drop the rest.
        if let Some((rev, t)) = &old {
            let from = if *rev == rev_nat_id { chunks } else { 0 };
            for c in from..t.len().div_ceil(MAGLEV_CHUNK) {
                self.map.delete_chunk(*rev, c as u32)?;
                writes += 1;
            }
        }
        self.applied.insert(fe, (rev_nat_id, table));
        Ok(writes)
    }
}
