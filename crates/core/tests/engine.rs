#![allow(clippy::unwrap_used)]
//! Compiler behaviour: endpoint derivation, ignored services, IDs, restore.

use sluice_core::model::Change;
use sluice_core::{
    parse_documents, plan_full, AppliedState, BackendAddr, CompileConfig, Engine, FrontendKind,
    MapOp, Protocol,
};

fn changes(text: &str) -> Vec<Change> {
    let out = parse_documents("t.yaml", text);
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    out.objects
        .into_iter()
        .map(|(o, _)| Change::Upsert(o))
        .collect()
}

fn backends(engine: &Engine, name: &str) -> Vec<Vec<String>> {
    engine
        .service("default", name)
        .iter()
        .map(|d| {
            d.backend_ids
                .iter()
                .map(|id| engine.backends()[id].to_string())
                .collect()
        })
        .collect()
}

const SVC: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, nodePort: 30080}
"#;

fn pod(name: &str, ip: &str, app: &str, http_port: Option<u16>) -> String {
    let ports = http_port.map_or("[]".to_string(), |p| {
        format!(
            "[{{name: http, containerPort: {p}}}, {{name: http, containerPort: 9, protocol: UDP}}]"
        )
    });
    format!(
        "kind: Pod\nmetadata: {{name: {name}, labels: {{app: {app}}}}}\nspec: {{containers: [{{ports: {ports}}}]}}\nstatus: {{podIP: {ip}}}\n---\n"
    )
}

#[test]
fn selector_with_named_target_port() {
    let mut e = Engine::new(CompileConfig::default());
    let text = format!(
        "{}{}{}{}{SVC}",
        pod("b", "10.0.0.2", "web", Some(8080)),
        pod("a", "10.0.0.1", "web", Some(8081)),
        pod("noname", "10.0.0.3", "web", None),
        pod("other", "10.0.0.4", "db", Some(8080)),
    );
    let plan = e.apply(&changes(&text));
    assert!(plan.errors.is_empty());
    let fes = e.service("default", "web");
    assert_eq!(fes.len(), 2);
    assert_eq!(fes[0].kind, FrontendKind::ClusterIp);
    assert_eq!(fes[1].kind, FrontendKind::NodePort);
    assert_eq!(fes[1].frontend.to_string(), "0.0.0.0:30080/TCP");
    assert_eq!(
        backends(&e, "web")[0],
        ["10.0.0.1:8081/TCP", "10.0.0.2:8080/TCP"]
    );
    // Relabelling a pod away removes it; only that Service is recompiled.
    let plan = e.apply(&changes(&pod("a", "10.0.0.1", "db", Some(8081))));
    assert_eq!(backends(&e, "web")[0], ["10.0.0.2:8080/TCP"]);
    assert!(
        plan.ops.contains(&MapOp::DeleteBackend { id: 1 })
            || plan
                .ops
                .iter()
                .any(|o| matches!(o, MapOp::DeleteBackend { .. }))
    );
}

#[test]
fn slices_override_selector_and_merge_ready_only() {
    let mut e = Engine::new(CompileConfig::default());
    let slice = |name: &str, ips: &[(&str, bool)], port: u16| {
        let eps: Vec<String> = ips
            .iter()
            .map(|(ip, ready)| format!("{{addresses: [{ip}], conditions: {{ready: {ready}}}}}"))
            .collect();
        format!(
            "kind: EndpointSlice\nmetadata: {{name: {name}, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{}]\nports: [{{name: http, port: {port}}}, {{name: other, port: 1}}]\n---\n",
            eps.join(", ")
        )
    };
    let text = format!(
        "{}{}{}{SVC}",
        pod("a", "10.0.0.1", "web", Some(8081)),
        slice("web-1", &[("10.1.0.2", true), ("10.1.0.9", false)], 7000),
        slice("web-2", &[("10.1.0.1", true), ("10.1.0.2", true)], 7000),
    );
    e.apply(&changes(&text));
    assert_eq!(
        backends(&e, "web")[0],
        ["10.1.0.1:7000/TCP", "10.1.0.2:7000/TCP"]
    );
}

#[test]
fn ignored_services_get_no_frontends_and_empty_services_do() {
    let mut e = Engine::new(CompileConfig::default());
    let text = r#"
kind: Service
metadata: {name: headless}
spec: {clusterIP: None, selector: {app: x}, ports: [{port: 80}]}
---
kind: Service
metadata: {name: ext}
spec: {type: ExternalName, externalName: example.com}
---
kind: Service
metadata: {name: other, labels: {service.kubernetes.io/service-proxy-name: foo}}
spec: {clusterIP: 10.96.0.3, ports: [{port: 80}]}
---
kind: Service
metadata: {name: empty}
spec: {clusterIP: 10.96.0.4, ports: [{port: 80}]}
"#;
    let plan = e.apply(&changes(text));
    assert_eq!(e.services().count(), 1);
    assert_eq!(e.service("default", "empty")[0].backend_ids.len(), 0);
    assert_eq!(plan.ops.len(), 2, "rev-NAT + master: {:?}", plan.ops);
}

#[test]
fn ids_are_stable_shared_and_reused_lowest_first() {
    let mut e = Engine::new(CompileConfig::default());
    let mk = |name: &str, ip: &str| {
        format!("kind: Service\nmetadata: {{name: {name}}}\nspec: {{clusterIP: {ip}, selector: {{app: web}}, ports: [{{port: 80}}]}}\n---\n")
    };
    let text = format!(
        "{}{}{}",
        pod("p", "10.0.0.1", "web", None),
        mk("s1", "10.96.0.1"),
        mk("s2", "10.96.0.2")
    );
    e.apply(&changes(&text));
    let s1 = e.service("default", "s1")[0].clone();
    let s2 = e.service("default", "s2")[0].clone();
    assert_eq!((s1.rev_nat_id, s2.rev_nat_id), (1, 2));
    assert_eq!(s1.backend_ids, s2.backend_ids, "backend shared");
    let del = sluice_core::ObjectRef {
        kind: sluice_core::Kind::Service,
        namespace: "default".into(),
        name: "s1".into(),
    };
    let plan = e.apply(&[Change::Delete(del)]);
    assert!(
        !plan
            .ops
            .iter()
            .any(|o| matches!(o, MapOp::DeleteBackend { .. })),
        "still used by s2"
    );
    assert_eq!(e.service("default", "s2")[0].rev_nat_id, 2);
    e.apply(&changes(&mk("s3", "10.96.0.3")));
    assert_eq!(e.service("default", "s3")[0].rev_nat_id, 1, "lowest free");
}

#[test]
fn restore_keeps_ids_and_resync_is_empty() {
    let mut e = Engine::new(CompileConfig::default());
    let text = format!(
        "{}{}{SVC}",
        pod("a", "10.0.0.1", "web", Some(8081)),
        pod("b", "10.0.0.2", "web", Some(8080))
    );
    let plan = e.apply(&changes(&text));
    let mut applied = AppliedState::default();
    for op in &plan.ops {
        applied.apply(op);
    }
    // Restart: only pod b left in the manifests.
    let mut e2 = Engine::restore(CompileConfig::default(), &applied).unwrap();
    e2.apply(&changes(&format!(
        "{}{SVC}",
        pod("b", "10.0.0.2", "web", Some(8080))
    )));
    let b = BackendAddr {
        ip: "10.0.0.2".parse().unwrap(),
        port: 8080,
        proto: Protocol::Tcp,
    };
    assert_eq!(e2.ids().backend_id(&b), e.ids().backend_id(&b));
    let ops = plan_full(e2.desired(), &applied);
    let mut after = applied.clone();
    for op in &ops {
        after.apply(op);
        assert!(after.invariant_violations().is_empty(), "{op:?}");
    }
    assert_eq!(after, AppliedState::from_desired(e2.desired()));
    assert!(plan_full(e2.desired(), &after).is_empty());
}

#[test]
fn id_exhaustion_is_an_error_not_a_panic() {
    let ids = sluice_core::IdAllocator::with_limits(1, 10);
    let mut e = Engine::with_ids(CompileConfig::default(), ids);
    let plan = e.apply(&changes(SVC));
    assert_eq!(plan.errors.len(), 1);
    assert_eq!(
        plan.errors[0].to_string(),
        "Service default/web: all rev-NAT IDs are in use"
    );
    assert!(plan.ops.is_empty());
    assert_eq!(e.services().count(), 0);
}

#[test]
fn grow_and_shrink_order() {
    let mut e = Engine::new(CompileConfig::default());
    let svc = "kind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80}]}\n";
    e.apply(&changes(&format!(
        "{}{svc}",
        pod("a", "10.0.0.1", "web", None)
    )));
    let plan = e.apply(&changes(&pod("b", "10.0.0.2", "web", None)));
    let kinds: Vec<&str> = plan.ops.iter().map(op_name).collect();
    assert_eq!(kinds, ["UpsertBackend", "UpsertSlot", "UpsertMaster"]);
    let del = sluice_core::ObjectRef {
        kind: sluice_core::Kind::Pod,
        namespace: "default".into(),
        name: "b".into(),
    };
    let plan = e.apply(&[Change::Delete(del)]);
    let kinds: Vec<&str> = plan.ops.iter().map(op_name).collect();
    assert_eq!(kinds, ["UpsertMaster", "DeleteSlot", "DeleteBackend"]);
}

fn op_name(op: &MapOp) -> &'static str {
    match op {
        MapOp::UpsertBackend { .. } => "UpsertBackend",
        MapOp::DeleteBackend { .. } => "DeleteBackend",
        MapOp::UpsertRevNat { .. } => "UpsertRevNat",
        MapOp::DeleteRevNat { .. } => "DeleteRevNat",
        MapOp::UpsertSlot { .. } => "UpsertSlot",
        MapOp::DeleteSlot { .. } => "DeleteSlot",
        MapOp::UpsertMaster { .. } => "UpsertMaster",
        MapOp::DeleteMaster { .. } => "DeleteMaster",
    }
}

/// After "map full", the resync must free entries before it writes new ones,
/// or it could never get through: removals come first whatever the order of
/// the frontends.
#[test]
fn plan_full_frees_entries_before_writing_new_ones() {
    use sluice_core::{DesiredService, DesiredState, Frontend, Master};
    use std::net::Ipv4Addr;
    let fe = |last: u8| Frontend {
        scope: Default::default(),
        ip: Ipv4Addr::new(10, 96, 0, last),
        port: 80,
        proto: Protocol::Tcp,
    };
    let be = BackendAddr {
        ip: Ipv4Addr::new(10, 244, 0, 5),
        port: 8080,
        proto: Protocol::Tcp,
    };
    let (old, new) = (fe(9), fe(1)); // the new frontend sorts first
    let mut applied = AppliedState::default();
    applied.backends.insert(1, be);
    applied.rev_nat.insert(1, old);
    applied.masters.insert(
        old,
        Master {
            count: 1,
            rev_nat_id: 1,
            flags: 0,
            affinity_timeout: 0,
        },
    );
    applied.slots.insert((old, 1), 1);
    let mut desired = DesiredState::default();
    desired.backends.insert(1, be);
    desired.services.insert(
        new,
        DesiredService {
            frontend: new,
            service: "default/new".into(),
            port_name: String::new(),
            kind: FrontendKind::ClusterIp,
            rev_nat_id: 2,
            backend_ids: vec![1],
            affinity_timeout: 0,
            drop_no_backend: false,
            maglev: false,
            external_local: false,
            source_ranges: Vec::new(),
        },
    );
    let ops = plan_full(&desired, &applied);
    let first_delete = ops
        .iter()
        .position(|o| matches!(o, MapOp::DeleteMaster { .. }));
    let first_slot = ops
        .iter()
        .position(|o| matches!(o, MapOp::UpsertSlot { .. }));
    assert!(first_delete.is_some() && first_slot.is_some(), "{ops:?}");
    assert!(first_delete < first_slot, "{ops:?}");
    let mut st = applied.clone();
    for op in &ops {
        st.apply(op);
        assert!(st.invariant_violations().is_empty(), "after {op:?}");
    }
    assert_eq!(st, AppliedState::from_desired(&desired));
}

/// Session affinity rides in the master entry (flag + timeout); switching it
/// off or on live rewrites only the masters, never the slots.
#[test]
fn session_affinity_switches_live_in_the_master() {
    let with = |affinity: &str| {
        format!(
            "{SVC}{affinity}---\n{}",
            pod("web-1", "10.244.0.5", "web", Some(8080))
        )
    };
    let mut engine = Engine::new(CompileConfig::default());
    engine.apply(&changes(&with("")));
    let master_flags = |e: &Engine| -> Vec<(u8, u32)> {
        e.service("default", "web")
            .iter()
            .map(|d| (d.master().flags, d.master().affinity_timeout))
            .collect()
    };
    assert_eq!(master_flags(&engine), vec![(0, 0), (17, 0)]);
    let on =
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n";
    let plan = engine.apply(&changes(&with(on)));
    assert_eq!(master_flags(&engine), vec![(2, 60), (17 | 2, 60)]);
    assert!(
        plan.ops.iter().all(|op| matches!(
            op,
            MapOp::UpsertMaster {
                affinity_timeout: 60,
                ..
            }
        )),
        "only the two masters change: {:?}",
        plan.ops
    );
    assert_eq!(plan.ops.len(), 2);
    engine.apply(&changes(&with("")));
    assert_eq!(master_flags(&engine), vec![(0, 0), (17, 0)]);
}

const TWO_NODE_SLICE: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, nodePort: 30080}
---
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
"#;

fn slice_endpoint(ip: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> String {
    format!(
        "- {{addresses: [{ip}], nodeName: {node}, conditions: {{ready: {ready}, serving: {serving}, terminating: {terminating}}}}}\n"
    )
}

fn frontends(engine: &Engine) -> Vec<(String, Vec<String>, u8)> {
    engine
        .service("default", "web")
        .iter()
        .map(|d| {
            (
                d.frontend.to_string(),
                d.backend_ids
                    .iter()
                    .map(|id| engine.backends()[id].ip.to_string())
                    .collect(),
                d.master().flags,
            )
        })
        .collect()
}

/// Ready endpoints only; when none is ready, those serving while
/// terminating; never the ones that stopped serving.
#[test]
fn terminating_endpoints_are_a_fallback_only() {
    let mut engine = Engine::new(CompileConfig::default());
    let both = format!(
        "{TWO_NODE_SLICE}{}{}{}",
        slice_endpoint("10.244.0.1", "a", true, true, false),
        slice_endpoint("10.244.0.2", "a", false, true, true),
        slice_endpoint("10.244.0.3", "a", false, false, true),
    );
    engine.apply(&changes(&both));
    assert_eq!(frontends(&engine)[0].1, vec!["10.244.0.1"]);
    let only_terminating = format!(
        "{TWO_NODE_SLICE}{}{}",
        slice_endpoint("10.244.0.2", "a", false, true, true),
        slice_endpoint("10.244.0.3", "a", false, false, true),
    );
    engine.apply(&changes(&only_terminating));
    assert_eq!(frontends(&engine)[0].1, vec!["10.244.0.2"]);
}

/// internalTrafficPolicy Local: the ClusterIP gets this node's endpoints
/// only (none: drop, not refuse); the NodePort keeps them all.
#[test]
fn internal_traffic_policy_local_limits_the_cluster_ip_to_this_node() {
    let cfg = CompileConfig {
        node_name: Some("node-a".into()),
        ..CompileConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let local = TWO_NODE_SLICE.replace(
        "  type: NodePort\n",
        "  type: NodePort\n  internalTrafficPolicy: Local\n",
    );
    let text = format!(
        "{local}{}{}",
        slice_endpoint("10.244.0.1", "node-a", true, true, false),
        slice_endpoint("10.244.1.1", "node-b", true, true, false),
    );
    engine.apply(&changes(&text));
    assert_eq!(
        frontends(&engine),
        vec![
            (
                "10.96.0.10:80/TCP".to_string(),
                vec!["10.244.0.1".to_string()],
                4
            ),
            (
                "0.0.0.0:30080/TCP".to_string(),
                vec!["10.244.0.1".to_string(), "10.244.1.1".to_string()],
                1 | 16
            ),
        ]
    );
    let remote_only = format!(
        "{local}{}",
        slice_endpoint("10.244.1.1", "node-b", true, true, false)
    );
    engine.apply(&changes(&remote_only));
    let f = frontends(&engine);
    assert!(f[0].1.is_empty(), "{f:?}");
    assert_eq!(f[0].2, 4, "no local endpoint: drop");
    // No endpoint anywhere (the slice deleted): refuse, as any Service
    // without endpoints (kube-proxy TestInternalTrafficPolicy, svc-020).
    engine.apply(&changes(&local));
    let f = frontends(&engine);
    assert!(f[0].1.is_empty(), "{f:?}");
    assert_eq!(f[0].2, 0, "no endpoint at all: refuse, not drop");
    // Back to Cluster: every endpoint, refuse when none.
    engine.apply(&changes(&format!(
        "{TWO_NODE_SLICE}{}",
        slice_endpoint("10.244.1.1", "node-b", true, true, false)
    )));
    assert_eq!(frontends(&engine)[0].1, vec!["10.244.1.1"]);
    assert_eq!(frontends(&engine)[0].2, 0);
}

/// Maglev per Service (annotation) or node-wide (config), as a master flag.
#[test]
fn maglev_is_chosen_per_service_or_node_wide() {
    let svc = |annotation: &str| {
        format!("kind: Service\nmetadata: {{name: m{annotation}}}\nspec:\n  clusterIP: 10.96.0.{}\n  ports: [{{port: 80}}]\n", 20 + annotation.len())
    };
    let flags = |e: &Engine, name: &str| e.service("default", name)[0].master().flags;
    let annotated = "kind: Service\nmetadata: {name: mm, annotations: {sluice.io/lb-algorithm: maglev}}\nspec:\n  clusterIP: 10.96.0.30\n  ports: [{port: 80}]\n";
    let mut e = Engine::new(CompileConfig::default());
    e.apply(&changes(&format!("{}---\n{annotated}", svc(""))));
    assert_eq!(flags(&e, "m"), 0);
    assert_eq!(flags(&e, "mm"), 8);
    let cfg = CompileConfig {
        maglev_default: true,
        ..CompileConfig::default()
    };
    let mut e = Engine::new(cfg);
    let opted_out = annotated.replace("maglev}", "random}");
    e.apply(&changes(&format!("{}---\n{opted_out}", svc(""))));
    assert_eq!(flags(&e, "m"), 8, "node default");
    assert_eq!(flags(&e, "mm"), 0, "the annotation wins");
}

/// externalIPs and load-balancer ingress IPs are frontends like the
/// ClusterIP (ipMode Proxy excepted); they are claimed like it, so another
/// Service cannot take them.
#[test]
fn external_and_load_balancer_ips_are_frontends() {
    let text = "kind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.40\n  externalIPs: [203.0.113.10]\n  ports: [{port: 80, nodePort: 30040}]\nstatus:\n  loadBalancer:\n    ingress: [{ip: 198.51.100.1}, {ip: 198.51.100.2, ipMode: Proxy}, {hostname: lb.example}]\n";
    let mut e = Engine::new(CompileConfig::default());
    e.apply(&changes(text));
    let mut kinds: Vec<(String, FrontendKind)> = e
        .service("default", "lb")
        .iter()
        .map(|d| (d.frontend.to_string(), d.kind))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("0.0.0.0:30040/TCP".to_string(), FrontendKind::NodePort),
            ("10.96.0.40:80/TCP".to_string(), FrontendKind::ClusterIp),
            (
                "198.51.100.1:80/TCP".to_string(),
                FrontendKind::LoadBalancer
            ),
            ("203.0.113.10:80/TCP".to_string(), FrontendKind::ExternalIp),
        ]
    );
    // Another Service whose ClusterIP is that external IP: refused.
    let mut store = sluice_core::Store::new();
    store.replace_file("a.yaml", parse_documents("a.yaml", text));
    let clash = "kind: Service\nmetadata: {name: clash}\nspec:\n  clusterIP: 203.0.113.10\n  ports: [{port: 80}]\n";
    store.replace_file("b.yaml", parse_documents("b.yaml", clash));
    let rejected: Vec<String> = store.rejections().map(|r| r.to_string()).collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    assert!(
        rejected[0].contains("203.0.113.10:80/TCP is already used by"),
        "{rejected:?}"
    );
}

/// An address listed twice is one frontend (the ClusterIP first), and
/// removing it leaks no rev-NAT id; loadBalancerSourceRanges guard the LB
/// IPs only (flag + ranges on their masters), whitespace tolerated.
#[test]
fn repeated_addresses_are_one_frontend_and_source_ranges_guard_lb_ips() {
    let text = "kind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 10.96.0.50\n  internalTrafficPolicy: Local\n  externalIPs: [203.0.113.10, 203.0.113.10, 10.96.0.50]\n  ports: [{port: 80}]\n";
    let mut e = Engine::new(CompileConfig::default());
    let plan = e.apply(&changes(text));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let mut fes: Vec<(String, FrontendKind)> = e
        .service("default", "s")
        .iter()
        .map(|d| (d.frontend.to_string(), d.kind))
        .collect();
    fes.sort();
    assert_eq!(
        fes,
        vec![
            ("10.96.0.50:80/TCP".to_string(), FrontendKind::ClusterIp),
            ("203.0.113.10:80/TCP".to_string(), FrontendKind::ExternalIp),
        ]
    );
    e.apply(&[sluice_core::Change::Delete(sluice_core::ObjectRef {
        kind: sluice_core::Kind::Service,
        namespace: "default".into(),
        name: "s".into(),
    })]);
    assert_eq!(e.ids().rev_nat_len(), 0, "no rev-NAT id leaked");

    let ranged = "kind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.51\n  externalIPs: [203.0.113.77]\n  loadBalancerSourceRanges: [' 203.0.113.000/025 ', 192.168.0.0/24]\n  ports: [{port: 80, nodePort: 30051}]\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.9}]}}\n";
    let plan = e.apply(&changes(ranged));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    for d in e.service("default", "lb") {
        let guarded = d.master().flags & 64 != 0;
        assert_eq!(guarded, d.kind == FrontendKind::LoadBalancer, "{d:?}");
        if guarded {
            let r: Vec<String> = d.source_ranges.iter().map(|n| n.to_string()).collect();
            assert_eq!(r, ["203.0.113.0/25", "192.168.0.0/24"]);
        } else {
            assert!(d.source_ranges.is_empty());
        }
    }
}

const ETP_SVC: &str = r#"
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  healthCheckNodePort: 30000
  clusterIP: 172.30.1.1
  externalIPs: [192.168.99.11]
  ports: [{name: "", port: 80, nodePort: 30001}]
status: {loadBalancer: {ingress: [{ip: 1.2.3.4}]}}
---
kind: EndpointSlice
metadata: {name: web-1, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: "", port: 80}]
endpoints:
"#;

/// (frontend, backend IPs, flags) of every entry, sorted by frontend.
fn etp_entries(e: &Engine) -> Vec<(String, Vec<String>, u8)> {
    let mut v = frontends(e);
    v.sort();
    v
}

fn etp_engine() -> Engine {
    Engine::new(CompileConfig {
        node_name: Some("test-node".into()),
        node_port_range: 1..=65535,
        ..CompileConfig::default()
    })
}

fn ips(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// svc-026: under externalTrafficPolicy Local every external address gets a
/// second, external-scope entry with the local set (local ready, else local
/// serving-terminating); the cluster set is chosen independently (a remote
/// ready endpoint beats local terminating ones). Local set empty while the
/// cluster has endpoints: drop; nothing anywhere: refuse.
#[test]
fn external_traffic_policy_local_builds_a_local_set_per_external_address() {
    let mut e = etp_engine();
    // ready endpoints exist
    let text = format!(
        "{ETP_SVC}{}{}{}{}{}",
        slice_endpoint("10.0.1.1", "test-node", true, true, false),
        slice_endpoint("10.0.1.2", "test-node", true, true, false),
        slice_endpoint("10.0.1.3", "test-node", false, true, true),
        slice_endpoint("10.0.1.4", "test-node", false, false, true),
        slice_endpoint("10.0.1.5", "node-1", true, true, false),
    );
    let plan = e.apply(&changes(&text));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let all = ips(&["10.0.1.1", "10.0.1.2", "10.0.1.5"]);
    let local = ips(&["10.0.1.1", "10.0.1.2"]);
    // flags: NODEPORT 1, EXTERNAL 16, ETP_LOCAL 32; DROP_NO_BACKEND 4
    assert_eq!(
        etp_entries(&e),
        vec![
            ("0.0.0.0:30001/TCP".into(), all.clone(), 1 | 16 | 32),
            (
                "0.0.0.0:30001/TCP (external, local endpoints)".into(),
                local.clone(),
                1 | 16 | 4
            ),
            ("1.2.3.4:80/TCP".into(), all.clone(), 16 | 32),
            (
                "1.2.3.4:80/TCP (external, local endpoints)".into(),
                local.clone(),
                16 | 4
            ),
            ("172.30.1.1:80/TCP".into(), all.clone(), 0),
            ("192.168.99.11:80/TCP".into(), all.clone(), 16 | 32),
            (
                "192.168.99.11:80/TCP (external, local endpoints)".into(),
                local,
                16 | 4
            ),
        ]
    );
    let svc = e.service("default", "web");
    assert!(svc.iter().all(|d| d.rev_nat_id != 0));

    // only terminating endpoints exist locally
    let text = format!(
        "{ETP_SVC}{}{}{}{}",
        slice_endpoint("10.0.1.2", "test-node", false, true, true),
        slice_endpoint("10.0.1.3", "test-node", false, true, true),
        slice_endpoint("10.0.1.4", "test-node", false, false, true),
        slice_endpoint("10.0.1.5", "node-1", true, true, false),
    );
    e.apply(&changes(&text));
    let v = etp_entries(&e);
    assert_eq!(v[4].1, ips(&["10.0.1.5"]), "cluster set: {v:?}");
    assert_eq!(v[3].1, ips(&["10.0.1.2", "10.0.1.3"]), "local set: {v:?}");

    // terminating endpoints on a remote node: drop for external clients
    let text = format!(
        "{ETP_SVC}{}",
        slice_endpoint("10.0.1.5", "node-1", false, true, true)
    );
    e.apply(&changes(&text));
    let v = etp_entries(&e);
    assert_eq!(v[4].1, ips(&["10.0.1.5"]));
    assert!(v[3].1.is_empty());
    assert_eq!(v[3].2 & 4, 4, "drop, not refuse: {v:?}");

    // no usable endpoints anywhere: refuse on both
    let text = format!(
        "{ETP_SVC}{}{}",
        slice_endpoint("10.0.1.5", "test-node", false, false, true),
        slice_endpoint("10.0.1.6", "node-1", false, false, true),
    );
    e.apply(&changes(&text));
    for (fe, b, flags) in etp_entries(&e) {
        assert!(b.is_empty(), "{fe}");
        assert_eq!(flags & 4, 0, "{fe}: refuse");
    }

    // back to Cluster: the external-scope entries go, ids are released
    let cluster = ETP_SVC.replace("  externalTrafficPolicy: Local\n", "");
    let text = format!(
        "{cluster}{}",
        slice_endpoint("10.0.1.5", "node-1", true, true, false)
    );
    e.apply(&changes(&text));
    assert_eq!(etp_entries(&e).len(), 4);
    assert_eq!(e.ids().rev_nat_len(), 4);
}

/// svc-025: eTP Cluster, the same fallback rules, one set for everyone.
#[test]
fn external_traffic_policy_cluster_uses_one_set_with_the_terminating_fallback() {
    let mut e = etp_engine();
    let cluster = ETP_SVC.replace("Local", "Cluster");
    let text = format!(
        "{cluster}{}{}{}{}",
        slice_endpoint("10.0.1.2", "test-node", false, true, true),
        slice_endpoint("10.0.1.3", "test-node", false, true, true),
        slice_endpoint("10.0.1.4", "another-node", false, false, true),
        slice_endpoint("10.0.1.5", "another-node", false, true, true),
    );
    e.apply(&changes(&text));
    let v = etp_entries(&e);
    assert_eq!(v.len(), 4, "{v:?}");
    for (fe, b, flags) in v {
        assert_eq!(b, ips(&["10.0.1.2", "10.0.1.3", "10.0.1.5"]), "{fe}");
        assert_eq!(flags & 32, 0);
    }
}

/// Bad values are per-object errors naming the field.
#[test]
fn bad_traffic_policy_health_check_port_and_source_range_are_rejected() {
    for (field, value, path) in [
        (
            "externalTrafficPolicy",
            "Sometimes",
            "spec.externalTrafficPolicy",
        ),
        ("healthCheckNodePort", "70000", "spec.healthCheckNodePort"),
        (
            "loadBalancerSourceRanges",
            "[10.0.0.0/33]",
            "spec.loadBalancerSourceRanges[0]",
        ),
        (
            "loadBalancerSourceRanges",
            "[nonsense]",
            "spec.loadBalancerSourceRanges[0]",
        ),
    ] {
        let text = format!(
            "kind: Service\nmetadata: {{name: bad}}\nspec:\n  clusterIP: 10.96.0.1\n  {field}: {value}\n  ports: [{{port: 80}}]\n"
        );
        let out = parse_documents("t.yaml", &text);
        assert_eq!(out.rejections.len(), 1, "{field}");
        let msg = out.rejections[0].to_string();
        assert!(msg.contains(path), "{msg}");
    }
}

/// svc-043: leading zeros are decimal, whitespace is tolerated.
#[test]
fn legacy_addresses_with_leading_zeros_are_decimal() {
    let text = "kind: Service\nmetadata: {name: web}\nspec:\n  type: LoadBalancer\n  clusterIP: 172.30.0.041\n  externalIPs: [' 192.168.099.022']\n  loadBalancerSourceRanges: [203.0.113.000/025]\n  ports: [{name: p80, port: 80, nodePort: 30001}]\nstatus: {loadBalancer: {ingress: [{ip: 1.2.3.004}]}}\n---\nkind: EndpointSlice\nmetadata: {name: web-1, labels: {kubernetes.io/service-name: web}}\naddressType: IPv4\nports: [{name: p80, port: 80}]\nendpoints: [{addresses: [10.180.00.001]}]\n";
    let mut e = etp_engine();
    let plan = e.apply(&changes(text));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    let v = etp_entries(&e);
    let fes: Vec<&str> = v.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        fes,
        [
            "0.0.0.0:30001/TCP",
            "1.2.3.4:80/TCP",
            "172.30.0.41:80/TCP",
            "192.168.99.22:80/TCP"
        ]
    );
    assert!(v.iter().all(|x| x.1 == ips(&["10.180.0.1"])));
    let lb = e
        .service("default", "web")
        .into_iter()
        .find(|d| d.kind == FrontendKind::LoadBalancer)
        .unwrap();
    assert_eq!(lb.source_ranges[0].to_string(), "203.0.113.0/25");
}

fn hinted_endpoint(ip: &str, ready: bool, zones: &[&str]) -> String {
    let hints = if zones.is_empty() {
        String::new()
    } else {
        format!(
            ", hints: {{forZones: [{}]}}",
            zones
                .iter()
                .map(|z| format!("{{name: {z}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    format!("- {{addresses: [{ip}], nodeName: n, conditions: {{ready: {ready}}}{hints}}}\n")
}

/// trafficDistribution PreferClose, with kube-proxy's rules for when the
/// zone hints may be trusted (pkg/proxy/topology.go, svc-035).
#[test]
fn prefer_close_keeps_traffic_in_the_zone_only_when_hints_are_trustworthy() {
    let cfg = CompileConfig {
        node_zone: Some("zone-a".into()),
        ..CompileConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let svc = TWO_NODE_SLICE.replace(
        "  type: NodePort\n",
        "  type: NodePort\n  trafficDistribution: PreferClose\n",
    );
    let cluster_ip = |engine: &Engine| frontends(engine)[0].1.clone();
    let nodeport = |engine: &Engine| frontends(engine)[1].1.clone();

    // Every ready endpoint hinted, one for this zone: only it, on every frontend.
    engine.apply(&changes(&format!(
        "{svc}{}{}{}",
        hinted_endpoint("10.0.0.1", true, &["zone-a"]),
        hinted_endpoint("10.0.0.2", true, &["zone-b"]),
        hinted_endpoint("10.0.0.3", true, &["zone-c", "zone-a"]),
    )));
    assert_eq!(cluster_ip(&engine), vec!["10.0.0.1", "10.0.0.3"]);
    assert_eq!(nodeport(&engine), vec!["10.0.0.1", "10.0.0.3"]);

    // A ready endpoint without hints: the hints are not trusted.
    engine.apply(&changes(&format!(
        "{svc}{}{}",
        hinted_endpoint("10.0.0.1", true, &["zone-a"]),
        hinted_endpoint("10.0.0.2", true, &[]),
    )));
    assert_eq!(cluster_ip(&engine), vec!["10.0.0.1", "10.0.0.2"]);

    // Unready endpoints neither count as unhinted nor get traffic.
    engine.apply(&changes(&format!(
        "{svc}{}{}{}",
        hinted_endpoint("10.0.0.1", true, &["zone-a"]),
        hinted_endpoint("10.0.0.2", true, &["zone-b"]),
        hinted_endpoint("10.0.0.4", false, &[]),
    )));
    assert_eq!(cluster_ip(&engine), vec!["10.0.0.1"]);

    // Nothing hinted for this zone: every ready endpoint.
    engine.apply(&changes(&format!(
        "{svc}{}{}",
        hinted_endpoint("10.0.0.2", true, &["zone-b"]),
        hinted_endpoint("10.0.0.3", true, &["zone-c"]),
    )));
    assert_eq!(cluster_ip(&engine), vec!["10.0.0.2", "10.0.0.3"]);

    // Without the opt-in the hints are ignored.
    engine.apply(&changes(&format!(
        "{TWO_NODE_SLICE}{}{}",
        hinted_endpoint("10.0.0.1", true, &["zone-a"]),
        hinted_endpoint("10.0.0.2", true, &["zone-b"]),
    )));
    assert_eq!(cluster_ip(&engine), vec!["10.0.0.1", "10.0.0.2"]);

    // A node without a zone ignores them too.
    let mut zoneless = Engine::new(CompileConfig::default());
    zoneless.apply(&changes(&format!(
        "{svc}{}{}",
        hinted_endpoint("10.0.0.1", true, &["zone-a"]),
        hinted_endpoint("10.0.0.2", true, &["zone-b"]),
    )));
    assert_eq!(cluster_ip(&zoneless), vec!["10.0.0.1", "10.0.0.2"]);
}

/// Health-check node ports: only LoadBalancers with eTP Local that set one;
/// the count is of this node's ready endpoints (kube-proxy's
/// TestHealthCheckNodePortWhenTerminating).
#[test]
fn health_checks_count_local_ready_endpoints_only() {
    let cfg = CompileConfig {
        node_name: Some("node-a".into()),
        node_port_range: 1..=65535,
        ..CompileConfig::default()
    };
    let mut engine = Engine::new(cfg);
    let lb = TWO_NODE_SLICE.replace(
        "  type: NodePort\n",
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 30001\n",
    );
    let checks = |e: &Engine| {
        e.health_checks()
            .map(|h| {
                (
                    h.namespace.clone(),
                    h.name.clone(),
                    h.port,
                    h.local_endpoints,
                )
            })
            .collect::<Vec<_>>()
    };
    engine.apply(&changes(&format!(
        "{lb}{}{}{}{}",
        slice_endpoint("10.244.0.1", "node-a", true, true, false),
        slice_endpoint("10.244.0.2", "node-a", true, true, false),
        slice_endpoint("10.244.0.3", "node-a", false, true, true),
        slice_endpoint("10.244.1.1", "node-b", true, true, false),
    )));
    assert_eq!(
        checks(&engine),
        vec![("default".into(), "web".into(), 30001, 2)]
    );

    // Every local endpoint terminating (still serving): traffic falls back
    // to them, but the node reports none, so the load balancer drains it.
    engine.apply(&changes(&format!(
        "{lb}{}{}",
        slice_endpoint("10.244.0.1", "node-a", false, true, true),
        slice_endpoint("10.244.1.1", "node-b", true, true, false),
    )));
    assert_eq!(
        checks(&engine),
        vec![("default".into(), "web".into(), 30001, 0)]
    );

    // Back to Cluster: no health-check port any more.
    let cluster = lb.replace("  externalTrafficPolicy: Local\n", "");
    engine.apply(&changes(&format!(
        "{cluster}{}",
        slice_endpoint("10.244.0.1", "node-a", true, true, false)
    )));
    assert!(checks(&engine).is_empty());
}

/// A named targetPort none of the selected pods declares is reported with
/// the Service and port; the port stays programmed (refusing until such a
/// pod appears) and the other Services are untouched.
#[test]
fn a_target_port_name_no_pod_has_is_reported() {
    let mut e = Engine::new(CompileConfig::default());
    let typo = SVC.replace("targetPort: http", "targetPort: htp");
    let plan = e.apply(&changes(&format!(
        "{}{typo}",
        pod("a", "10.0.0.1", "web", Some(8080))
    )));
    let msgs: Vec<String> = plan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        vec![
            r#"Service default/web: spec.ports[0].targetPort "htp" names no container port of the 1 selected pod(s); the port has no endpoints"#
        ]
    );
    assert_eq!(e.warnings().cloned().collect::<Vec<_>>(), msgs);
    assert_eq!(e.service("default", "web").len(), 2);
    assert!(backends(&e, "web")[0].is_empty());
    // Fixed: no error, the pod is a backend.
    let plan = e.apply(&changes(SVC));
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    assert!(e.warnings().next().is_none());
    assert_eq!(backends(&e, "web")[0], ["10.0.0.1:8080/TCP"]);
}

fn pod_with_state(name: &str, ip: &str, ready: bool, deleting: bool) -> String {
    let del = if deleting {
        ", deletionTimestamp: \"2026-01-01T00:00:00Z\""
    } else {
        ""
    };
    let status = if ready { "True" } else { "False" };
    format!(
        "kind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}{del}}}\nspec: {{containers: [{{ports: [{{name: http, containerPort: 8080}}]}}]}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: \"{status}\"}}]}}\n---\n"
    )
}

/// Endpoints derived from selected Pods follow the EndpointSlice
/// controller: not-ready pods are not endpoints unless the Service
/// publishes not-ready addresses; pods being deleted are a fallback only
/// (svc-028).
#[test]
fn selector_endpoints_follow_pod_readiness_and_publish_not_ready() {
    let mut e = Engine::new(CompileConfig::default());
    let both = format!(
        "{}{}{SVC}",
        pod_with_state("a", "10.0.0.1", true, false),
        pod_with_state("b", "10.0.0.2", false, false),
    );
    e.apply(&changes(&both));
    assert_eq!(backends(&e, "web")[0], ["10.0.0.1:8080/TCP"]);

    let publish = SVC.replace(
        "  selector:",
        "  publishNotReadyAddresses: true\n  selector:",
    );
    e.apply(&changes(&publish));
    assert_eq!(
        backends(&e, "web")[0],
        ["10.0.0.1:8080/TCP", "10.0.0.2:8080/TCP"]
    );

    // Only pods being deleted: still-ready ones serve as the fallback.
    let mut e = Engine::new(CompileConfig::default());
    e.apply(&changes(&format!(
        "{}{}{SVC}",
        pod_with_state("a", "10.0.0.1", true, true),
        pod_with_state("b", "10.0.0.2", false, true),
    )));
    assert_eq!(backends(&e, "web")[0], ["10.0.0.1:8080/TCP"]);
    // Unready and deleted, but published: both.
    e.apply(&changes(&publish));
    assert_eq!(
        backends(&e, "web")[0],
        ["10.0.0.1:8080/TCP", "10.0.0.2:8080/TCP"]
    );
}

/// The agent rewrites its source-range map only when this generation
/// moves: it must move for every change that can alter the ranges (even
/// one that changes no service-map entry), and not for other Services.
#[test]
fn the_source_range_generation_moves_only_for_services_that_concern_ranges() {
    let mut e = Engine::new(CompileConfig {
        node_port_range: 1..=65535,
        ..CompileConfig::default()
    });
    let g0 = e.source_ranges_generation();
    e.apply(&changes(TWO_NODE_SLICE));
    assert_eq!(e.source_ranges_generation(), g0, "a NodePort Service");
    let lb = |ranges: &str| {
        format!(
            "kind: Service\nmetadata: {{name: lb}}\nspec:\n  type: LoadBalancer\n  clusterIP: 10.96.0.51\n  loadBalancerSourceRanges: [{ranges}]\n  ports: [{{port: 80, nodePort: 30051}}]\nstatus: {{loadBalancer: {{ingress: [{{ip: 1.2.3.4}}]}}}}\n"
        )
    };
    e.apply(&changes(&lb("10.0.0.0/8")));
    let g1 = e.source_ranges_generation();
    assert_ne!(g1, g0);
    // Only the ranges change: no map op, but the generation moves.
    let plan = e.apply(&changes(&lb("192.168.0.0/16")));
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
    assert_ne!(e.source_ranges_generation(), g1);
}
