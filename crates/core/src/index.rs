//! The engine's copy of the objects, with the reverse indexes that make a
//! change cost proportional to what it touches, not to cluster size.

use std::collections::{BTreeSet, HashMap};

use crate::model::{Change, EndpointSlice, Kind, Object, Pod, Service};

/// (namespace, name).
pub(crate) type Key = (String, String);
/// (namespace, label key, label value).
type LabelKey = (String, String, String);

#[derive(Debug, Default)]
pub(crate) struct Objects {
    pub services: HashMap<Key, Service>,
    pub slices: HashMap<Key, EndpointSlice>,
    /// (namespace, service name) → slice names.
    pub slices_by_service: HashMap<Key, BTreeSet<String>>,
    pub pods: HashMap<Key, Pod>,
    /// Pods by each of their labels.
    pub pods_by_label: HashMap<LabelKey, BTreeSet<String>>,
    /// Selector Services by the first pair of their selector: any pod they
    /// select carries that pair, so a pod's own labels find them all.
    services_by_label: HashMap<LabelKey, BTreeSet<String>>,
}

fn key(ns: &str, name: &str) -> Key {
    (ns.to_string(), name.to_string())
}

fn first_pair(svc: &Service) -> Option<LabelKey> {
    svc.selector
        .iter()
        .next()
        .map(|(k, v)| (svc.meta.namespace.clone(), k.clone(), v.clone()))
}

pub(crate) fn selects(svc: &Service, pod: &Pod) -> bool {
    !svc.selector.is_empty()
        && svc
            .selector
            .iter()
            .all(|(k, v)| pod.meta.labels.get(k) == Some(v))
}

impl Objects {
    /// Applies one change and adds the Services it may affect to `affected`.
    pub fn apply(&mut self, change: &Change, affected: &mut BTreeSet<Key>) {
        match change {
            Change::Upsert(Object::Service(s)) => {
                let k = key(&s.meta.namespace, &s.meta.name);
                self.remove_service(&k);
                if let Some(lk) = first_pair(s) {
                    self.services_by_label
                        .entry(lk)
                        .or_default()
                        .insert(k.1.clone());
                }
                self.services.insert(k.clone(), s.clone());
                affected.insert(k);
            }
            Change::Upsert(Object::EndpointSlice(e)) => {
                let k = key(&e.meta.namespace, &e.meta.name);
                if let Some(old) = self.remove_slice(&k) {
                    affected.insert(key(&old.meta.namespace, &old.service_name));
                }
                let sk = key(&e.meta.namespace, &e.service_name);
                self.slices_by_service
                    .entry(sk.clone())
                    .or_default()
                    .insert(k.1.clone());
                self.slices.insert(k, e.clone());
                affected.insert(sk);
            }
            Change::Upsert(Object::Pod(p)) => {
                let k = key(&p.meta.namespace, &p.meta.name);
                if let Some(old) = self.remove_pod(&k) {
                    self.services_selecting(&old, affected);
                }
                for (lk, lv) in &p.meta.labels {
                    self.pods_by_label
                        .entry((k.0.clone(), lk.clone(), lv.clone()))
                        .or_default()
                        .insert(k.1.clone());
                }
                self.services_selecting(p, affected);
                self.pods.insert(k, p.clone());
            }
            // Namespaces and policies do not influence services; the
            // policy engine consumes them.
            Change::Upsert(
                Object::Namespace(_) | Object::NetworkPolicy(_) | Object::CiliumNetworkPolicy(_),
            ) => {}
            Change::Delete(r) => {
                let k = key(&r.namespace, &r.name);
                match r.kind {
                    Kind::Service => {
                        self.remove_service(&k);
                        affected.insert(k);
                    }
                    Kind::EndpointSlice => {
                        if let Some(old) = self.remove_slice(&k) {
                            affected.insert(key(&old.meta.namespace, &old.service_name));
                        }
                    }
                    Kind::Pod => {
                        if let Some(old) = self.remove_pod(&k) {
                            self.services_selecting(&old, affected);
                        }
                    }
                    Kind::Namespace | Kind::NetworkPolicy | Kind::CiliumNetworkPolicy => {}
                }
            }
        }
    }

    fn remove_service(&mut self, k: &Key) {
        let Some(old) = self.services.remove(k) else {
            return;
        };
        if let Some(lk) = first_pair(&old) {
            remove_from(&mut self.services_by_label, &lk, &k.1);
        }
    }

    fn remove_slice(&mut self, k: &Key) -> Option<EndpointSlice> {
        let old = self.slices.remove(k)?;
        let sk = key(&old.meta.namespace, &old.service_name);
        remove_from(&mut self.slices_by_service, &sk, &k.1);
        Some(old)
    }

    fn remove_pod(&mut self, k: &Key) -> Option<Pod> {
        let old = self.pods.remove(k)?;
        for (lk, lv) in &old.meta.labels {
            let label = (k.0.clone(), lk.clone(), lv.clone());
            remove_from(&mut self.pods_by_label, &label, &k.1);
        }
        Some(old)
    }

    fn services_selecting(&self, pod: &Pod, affected: &mut BTreeSet<Key>) {
        let ns = &pod.meta.namespace;
        for (lk, lv) in &pod.meta.labels {
            let label = (ns.clone(), lk.clone(), lv.clone());
            let Some(names) = self.services_by_label.get(&label) else {
                continue;
            };
            for name in names {
                let k = key(ns, name);
                if self.services.get(&k).is_some_and(|s| selects(s, pod)) {
                    affected.insert(k);
                }
            }
        }
    }

    /// Pods in the Service's namespace that its selector matches.
    pub fn selected_pods<'a>(&'a self, svc: &'a Service) -> impl Iterator<Item = &'a Pod> + 'a {
        let names = first_pair(svc).and_then(|lk| self.pods_by_label.get(&lk));
        names.into_iter().flatten().filter_map(move |name| {
            self.pods
                .get(&key(&svc.meta.namespace, name))
                .filter(|p| selects(svc, p))
        })
    }

    /// EndpointSlices labelled with this Service's name, in name order.
    pub fn slices_of<'a>(&'a self, k: &Key) -> impl Iterator<Item = &'a EndpointSlice> + 'a {
        let names = self.slices_by_service.get(k);
        let ns = k.0.clone();
        names
            .into_iter()
            .flatten()
            .filter_map(move |name| self.slices.get(&key(&ns, name)))
    }

    pub fn has_slices(&self, k: &Key) -> bool {
        self.slices_by_service.get(k).is_some_and(|s| !s.is_empty())
    }
}

fn remove_from<K: std::hash::Hash + Eq>(map: &mut HashMap<K, BTreeSet<String>>, k: &K, name: &str) {
    if let Some(set) = map.get_mut(k) {
        set.remove(name);
        if set.is_empty() {
            map.remove(k);
        }
    }
}
