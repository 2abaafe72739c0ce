#![allow(clippy::unwrap_used)]
//! Store rules: last good version, file removal, conflicts, pod IP registry.

use sluice_core::model::{Change, Object};
use sluice_core::{parse_documents, Store};

fn svc(name: &str, ip: &str, port: &str) -> String {
    format!(
        "kind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, selector: {{app: {name}}}, ports: [{{port: {port}}}]}}\n"
    )
}

fn load(store: &mut Store, file: &str, text: &str) -> Vec<Change> {
    store.replace_file(file, parse_documents(file, text))
}

fn rejections(store: &Store) -> Vec<String> {
    store.rejections().map(ToString::to_string).collect()
}

fn upserted_port(changes: &[Change]) -> Option<u16> {
    changes.iter().find_map(|c| match c {
        Change::Upsert(Object::Service(s)) => Some(s.ports[0].port),
        _ => None,
    })
}

#[test]
fn last_good_version_stays_and_rejection_is_reported() {
    let mut st = Store::new();
    let ch = load(&mut st, "a.yaml", &svc("web", "10.96.0.1", "80"));
    assert_eq!(upserted_port(&ch), Some(80));
    let ch = load(&mut st, "a.yaml", &svc("web", "10.96.0.1", "70000"));
    assert!(ch.is_empty(), "old version must stay: {ch:?}");
    assert_eq!(
        rejections(&st),
        ["a.yaml: Service default/web: spec.ports[0].port: 70000 is out of range"]
    );
    // Fixed: new version applied, rejection cleared.
    let ch = load(&mut st, "a.yaml", &svc("web", "10.96.0.1", "81"));
    assert_eq!(upserted_port(&ch), Some(81));
    assert!(rejections(&st).is_empty());
}

#[test]
fn unchanged_reload_is_silent_and_removed_objects_are_deleted() {
    let mut st = Store::new();
    let two = format!(
        "{}---\n{}",
        svc("a", "10.96.0.1", "80"),
        svc("b", "10.96.0.2", "80")
    );
    assert_eq!(load(&mut st, "f.yaml", &two).len(), 2);
    assert!(load(&mut st, "f.yaml", &two).is_empty());
    let ch = load(&mut st, "f.yaml", &svc("a", "10.96.0.1", "80"));
    assert!(matches!(&ch[..], [Change::Delete(r)] if r.name == "b"));
    let ch = st.remove_file("f.yaml");
    assert!(matches!(&ch[..], [Change::Delete(r)] if r.name == "a"));
    assert!(st.is_empty());
}

#[test]
fn first_programmed_service_keeps_frontend() {
    let mut st = Store::new();
    load(&mut st, "z.yaml", &svc("zzz", "10.96.0.1", "80"));
    let ch = load(&mut st, "a.yaml", &svc("aaa", "10.96.0.1", "80"));
    assert!(ch.is_empty());
    assert_eq!(
        rejections(&st),
        ["a.yaml: Service default/aaa: spec.ports[0]: 10.96.0.1:80/TCP is already used by Service default/zzz"]
    );
    // When the owner goes away, the parked newcomer takes over.
    let ch = st.remove_file("z.yaml");
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert!(matches!(&ch[1], Change::Upsert(Object::Service(s)) if s.meta.name == "aaa"));
    assert!(rejections(&st).is_empty());
}

#[test]
fn same_batch_conflict_smaller_name_wins() {
    let mut st = Store::new();
    let text = format!(
        "{}---\n{}",
        svc("b", "10.96.0.1", "80"),
        svc("a", "10.96.0.1", "80")
    );
    let ch = load(&mut st, "f.yaml", &text);
    assert!(matches!(&ch[..], [Change::Upsert(Object::Service(s))] if s.meta.name == "a"));
    assert_eq!(
        rejections(&st),
        ["f.yaml: Service default/b: spec.ports[0]: 10.96.0.1:80/TCP is already used by Service default/a"]
    );
}

#[test]
fn node_port_conflict() {
    let mut st = Store::new();
    let np = |name: &str, ip: &str| {
        format!("kind: Service\nmetadata: {{name: {name}}}\nspec: {{type: NodePort, clusterIP: {ip}, ports: [{{port: 80, nodePort: 30001}}]}}\n")
    };
    load(&mut st, "a.yaml", &np("a", "10.96.0.1"));
    load(&mut st, "b.yaml", &np("b", "10.96.0.2"));
    assert_eq!(
        rejections(&st),
        ["b.yaml: Service default/b: spec.ports[0].nodePort: nodePort 30001/TCP is already used by Service default/a"]
    );
}

#[test]
fn object_in_two_files_first_wins() {
    let mut st = Store::new();
    load(&mut st, "a.yaml", &svc("web", "10.96.0.1", "80"));
    assert!(load(&mut st, "b.yaml", &svc("web", "10.96.0.2", "80")).is_empty());
    assert_eq!(
        rejections(&st),
        ["b.yaml: Service default/web: already defined in a.yaml; the first definition is kept"]
    );
}

#[test]
fn registered_pod_ip_overrides_status() {
    let mut st = Store::new();
    let pod = "kind: Pod\nmetadata: {name: p, labels: {app: x}}\nstatus: {podIP: 10.0.0.5}\n";
    load(&mut st, "p.yaml", pod);
    let ch = st.set_pod_ip("default", "p", Some("10.0.0.9".parse().unwrap()));
    assert!(
        matches!(&ch[..], [Change::Upsert(Object::Pod(p))] if p.ip == Some("10.0.0.9".parse().unwrap()))
    );
    assert!(st
        .set_pod_ip("default", "p", Some("10.0.0.9".parse().unwrap()))
        .is_empty());
    // Reloading the file keeps the registered IP.
    let ch = load(&mut st, "p.yaml", &pod.replace("10.0.0.5", "10.0.0.6"));
    assert!(
        matches!(&ch[..], [Change::Upsert(Object::Pod(p))] if p.ip == Some("10.0.0.9".parse().unwrap()))
    );
    let ch = st.set_pod_ip("default", "p", None);
    assert!(
        matches!(&ch[..], [Change::Upsert(Object::Pod(p))] if p.ip == Some("10.0.0.6".parse().unwrap()))
    );
    // A registration before the manifest is kept for later.
    assert!(st
        .set_pod_ip("default", "q", Some("10.0.0.7".parse().unwrap()))
        .is_empty());
}
