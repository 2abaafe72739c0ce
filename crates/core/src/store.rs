//! Objects by identity, with the file each came from.
//!
//! The store turns "this file now parses to X" into object-level changes,
//! enforcing three rules: a rejected object keeps its last good version;
//! an object belongs to one file; a Service frontend belongs to one Service
//! (first programmed wins; within a batch, the smaller namespace/name).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use crate::claims::{claims_of, Claim};
use crate::error::ObjectError;
use crate::model::{Change, Kind, Object, ObjectRef};
use crate::parse::{ParseOutcome, Rejection};

#[derive(Debug, Clone)]
struct Stored {
    file: String,
    object: Object,
}

/// A Service refused because of a frontend conflict; retried whenever
/// claims are released, so it takes over once the owner goes away.
#[derive(Debug, Clone)]
struct Parked {
    file: String,
    object: Object,
    rejection: Rejection,
}

#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectRef, Stored>,
    by_file: BTreeMap<String, BTreeSet<ObjectRef>>,
    rejections: BTreeMap<String, Vec<Rejection>>,
    parked: BTreeMap<ObjectRef, Parked>,
    claims: HashMap<Claim, ObjectRef>,
    /// Pod IPs registered by the CNI; they override status.podIP.
    pod_ips: HashMap<(String, String), Ipv4Addr>,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces everything that came from `file` with `outcome`.
    pub fn replace_file(&mut self, file: &str, outcome: ParseOutcome) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut rejections = outcome.rejections;
        self.parked.retain(|_, p| p.file != file);
        let rejected: BTreeSet<ObjectRef> = rejections
            .iter()
            .filter_map(|r| r.object_ref.clone())
            .collect();

        let mut incoming: BTreeMap<ObjectRef, Object> = BTreeMap::new();
        for (object, key) in outcome.objects {
            let reject = |error| Rejection {
                file: file.to_string(),
                object: key.to_string(),
                object_ref: Some(key.clone()),
                error,
            };
            let error = if let Some(other) = self.objects.get(&key).filter(|s| s.file != file) {
                ObjectError::DefinedElsewhere(other.file.clone())
            } else if let Entry::Vacant(slot) = incoming.entry(key.clone()) {
                slot.insert(object);
                continue;
            } else {
                ObjectError::DuplicateInFile
            };
            rejections.push(reject(error));
        }

        // Gone from the file (and not merely broken): delete.
        let old_keys = self.by_file.get(file).cloned().unwrap_or_default();
        for key in &old_keys {
            if !incoming.contains_key(key) && !rejected.contains(key) {
                self.remove(key);
                changes.push(Change::Delete(key.clone()));
            }
        }

        // Updates before newcomers, so existing owners keep their frontends;
        // BTreeMap order makes the smaller namespace/name win among equals.
        let (updates, fresh): (Vec<_>, Vec<_>) = incoming
            .into_iter()
            .partition(|(k, _)| self.objects.contains_key(k));
        for (key, object) in updates.into_iter().chain(fresh) {
            match self.admit(&key, file, object.clone()) {
                Ok(change) => changes.extend(change),
                Err(error) => {
                    let rejection = Rejection {
                        file: file.to_string(),
                        object: key.to_string(),
                        object_ref: Some(key.clone()),
                        error,
                    };
                    self.parked.insert(
                        key,
                        Parked {
                            file: file.to_string(),
                            object,
                            rejection: rejection.clone(),
                        },
                    );
                    rejections.push(rejection);
                }
            }
        }
        if rejections.is_empty() {
            self.rejections.remove(file);
        } else {
            self.rejections.insert(file.to_string(), rejections);
        }
        changes.extend(self.retry_parked());
        changes
    }

    /// The file is gone: all its objects are deleted.
    pub fn remove_file(&mut self, file: &str) -> Vec<Change> {
        self.replace_file(file, ParseOutcome::default())
    }

    /// Records the IP the CNI assigned to a pod (`None` on teardown).
    pub fn set_pod_ip(&mut self, namespace: &str, pod: &str, ip: Option<Ipv4Addr>) -> Vec<Change> {
        let pk = (namespace.to_string(), pod.to_string());
        let key = ObjectRef {
            kind: Kind::Pod,
            namespace: namespace.to_string(),
            name: pod.to_string(),
        };
        let before = self.objects.get(&key).map(|s| self.effective(&s.object));
        match ip {
            Some(ip) => self.pod_ips.insert(pk, ip),
            None => self.pod_ips.remove(&pk),
        };
        let after = self.objects.get(&key).map(|s| self.effective(&s.object));
        match after {
            Some(after) if before.as_ref() != Some(&after) => vec![Change::Upsert(after)],
            _ => Vec::new(),
        }
    }

    /// Every object as an upsert (to seed a fresh engine).
    pub fn snapshot(&self) -> Vec<Change> {
        self.objects
            .values()
            .map(|s| Change::Upsert(self.effective(&s.object)))
            .collect()
    }

    pub fn get(&self, key: &ObjectRef) -> Option<Object> {
        self.objects.get(key).map(|s| self.effective(&s.object))
    }

    pub fn file_of(&self, key: &ObjectRef) -> Option<&str> {
        self.objects.get(key).map(|s| s.file.as_str())
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Current rejections of all files, by file.
    pub fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.rejections.values().flatten()
    }

    /// Stores `object`, keeping the old version if its frontends conflict.
    fn admit(
        &mut self,
        key: &ObjectRef,
        file: &str,
        object: Object,
    ) -> Result<Option<Change>, ObjectError> {
        let old = self.objects.get(key).cloned();
        if let Some(old) = &old {
            if old.object == object {
                return Ok(None);
            }
            self.release(key, &old.object);
        }
        if let Err(e) = self.claim(key, &object) {
            if let Some(old) = &old {
                // Its claims were released just above, so this cannot fail.
                let _ = self.claim(key, &old.object);
            }
            return Err(e);
        }
        self.objects.insert(
            key.clone(),
            Stored {
                file: file.to_string(),
                object: object.clone(),
            },
        );
        self.by_file
            .entry(file.to_string())
            .or_default()
            .insert(key.clone());
        Ok(Some(Change::Upsert(self.effective(&object))))
    }

    fn retry_parked(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let keys: Vec<ObjectRef> = self.parked.keys().cloned().collect();
        for key in keys {
            let Some(p) = self.parked.get(&key).cloned() else {
                continue;
            };
            if let Ok(change) = self.admit(&key, &p.file, p.object) {
                self.parked.remove(&key);
                if let Some(list) = self.rejections.get_mut(&p.file) {
                    list.retain(|r| r != &p.rejection);
                    if list.is_empty() {
                        self.rejections.remove(&p.file);
                    }
                }
                changes.extend(change);
            }
        }
        changes
    }

    fn claim(&mut self, key: &ObjectRef, object: &Object) -> Result<(), ObjectError> {
        let Object::Service(svc) = object else {
            return Ok(());
        };
        let claims = claims_of(svc);
        for (path, claim) in &claims {
            if let Some(owner) = self.claims.get(claim).filter(|o| *o != key) {
                return Err(ObjectError::Conflict {
                    path: path.clone(),
                    claim: claim.to_string(),
                    owner: owner.to_string(),
                });
            }
        }
        for (_, claim) in claims {
            self.claims.insert(claim, key.clone());
        }
        Ok(())
    }

    fn release(&mut self, key: &ObjectRef, object: &Object) {
        if let Object::Service(svc) = object {
            for (_, claim) in claims_of(svc) {
                if self.claims.get(&claim) == Some(key) {
                    self.claims.remove(&claim);
                }
            }
        }
    }

    fn remove(&mut self, key: &ObjectRef) {
        if let Some(old) = self.objects.remove(key) {
            self.release(key, &old.object);
            if let Some(set) = self.by_file.get_mut(&old.file) {
                set.remove(key);
                if set.is_empty() {
                    self.by_file.remove(&old.file);
                }
            }
        }
    }

    fn effective(&self, object: &Object) -> Object {
        match object {
            Object::Pod(p) => {
                let mut p = p.clone();
                let k = (p.meta.namespace.clone(), p.meta.name.clone());
                if let Some(ip) = self.pod_ips.get(&k) {
                    p.ip = Some(*ip);
                }
                Object::Pod(p)
            }
            other => other.clone(),
        }
    }
}
