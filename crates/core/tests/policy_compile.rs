#![allow(clippy::unwrap_used)]
//! Policy compiler behaviour. Every connection checked here goes through
//! both `evaluate` and a model of the datapath on the compiled tables
//! (`common::Fixture::verdict`), and the two must agree.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::{manifests, namespace, net, pod, Fixture};
use sluice_core::model::{Change, Kind, ObjectRef};
use sluice_core::policy::{
    Direction, DirectionVerdict, IdentityKind, Peer, PolicyEngine, PolicyKey, PolicyState, ID_ANY,
    ID_HEALTH, ID_HOST, ID_REMOTE_NODE, ID_WORLD, RULE_ID_HOST,
};
use sluice_core::{CompileConfig, Engine, Protocol};

const NODE: &str = "192.168.1.1";

/// Namespaces x (team=red) and y (team=blue), z without an object.
fn base() -> Vec<Change> {
    vec![
        namespace("x", &[("team", "red")]),
        namespace("y", &[("team", "blue")]),
        pod(
            "x",
            "db",
            &[("app", "db")],
            Some("10.244.0.10"),
            &[("pg", Protocol::Tcp, 5432)],
        ),
        pod(
            "x",
            "web",
            &[("app", "web"), ("tier", "front")],
            Some("10.244.0.11"),
            &[("http", Protocol::Tcp, 8080), ("dns", Protocol::Udp, 53)],
        ),
        pod("x", "api", &[("role", "api")], Some("10.244.0.12"), &[]),
        pod("y", "api", &[("role", "api")], Some("10.244.1.12"), &[]),
        pod(
            "y",
            "web",
            &[("app", "web")],
            Some("10.244.1.11"),
            &[("http", Protocol::Tcp, 9090)],
        ),
        pod("z", "tool", &[("role", "api")], Some("10.244.2.5"), &[]),
    ]
}

fn fixture(policies: &str) -> Fixture {
    let mut changes = base();
    changes.extend(manifests(policies));
    Fixture::new(&[NODE], &changes)
}

fn np(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\nspec:\n{spec}\n---\n"
    )
}

fn cnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: x}}\nspec:\n{spec}\n---\n"
    )
}

const ALL_PODS: [&str; 6] = ["x/db", "x/web", "x/api", "y/api", "y/web", "z/tool"];

/// Which of ALL_PODS may open TCP `port` to `dst`.
fn sources(f: &Fixture, dst: &str, port: u16) -> Vec<&'static str> {
    ALL_PODS
        .into_iter()
        .filter(|s| *s != dst && f.tcp(s, dst, port))
        .collect()
}

#[test]
fn no_policy_allows_everything() {
    let f = fixture("");
    assert_eq!(sources(&f, "x/db", 1).len(), 5);
    assert!(f.tcp("8.8.8.8", "x/db", 1));
    assert!(f.state.entries.is_empty());
    assert!(f
        .state
        .endpoints
        .values()
        .all(|e| !e.ingress_enforced && !e.egress_enforced));
    let v = f.verdict("x/web", "x/db", Protocol::Tcp, 1);
    assert_eq!(v.ingress, DirectionVerdict::NotSelected);
}

#[test]
fn pod_selector_peer_is_same_namespace() {
    let f = fixture(&np(
        "allow-api",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {role: api}}}]}]",
    ));
    assert_eq!(sources(&f, "x/db", 5432), ["x/api"]);
    // Only ingress of db is isolated.
    assert!(f.tcp("x/db", "y/web", 80));
    let v = f.verdict("x/web", "x/db", Protocol::Tcp, 5432);
    let DirectionVerdict::DefaultDeny { selected_by } = &v.ingress else {
        panic!("{v:?}")
    };
    assert_eq!(selected_by[0].to_string(), "NetworkPolicy x/allow-api");
    let v = f.verdict("x/api", "x/db", Protocol::Tcp, 5432);
    let DirectionVerdict::Allowed { rule } = &v.ingress else {
        panic!("{v:?}")
    };
    assert_eq!(rule.to_string(), "x/allow-api ingress[0]");
}

#[test]
fn namespace_selector_only_selects_every_pod_of_matching_namespaces() {
    let f = fixture(&np(
        "from-blue",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]",
    ));
    assert_eq!(sources(&f, "x/db", 5432), ["y/api", "y/web"]);
    // A namespace without an object still has its name label.
    let f = fixture(&np(
        "from-z",
        "  podSelector: {}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]}]",
    ));
    assert_eq!(sources(&f, "x/db", 5432), ["z/tool"]);
    assert!(!f.tcp("8.8.8.8", "x/db", 5432));
}

#[test]
fn namespace_and_pod_selector_together_are_anded() {
    let f = fixture(&np(
        "and",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: blue}}\n      podSelector: {matchLabels: {role: api}}",
    ));
    assert_eq!(sources(&f, "x/db", 5432), ["y/api"]);
    // Two separate peers are ORed instead.
    let f = fixture(&np(
        "or",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: blue}}\n    - podSelector: {matchLabels: {role: api}}",
    ));
    assert_eq!(sources(&f, "x/db", 5432), ["x/api", "y/api", "y/web"]);
}

#[test]
fn match_expressions_all_operators() {
    let policy = |expr: &str| {
        fixture(&np(
            "expr",
            &format!("  podSelector: {{matchLabels: {{app: db}}}}\n  ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchExpressions: [{expr}]}}}}]}}]"),
        ))
    };
    let f = policy("{key: app, operator: In, values: [web, other]}");
    assert_eq!(sources(&f, "x/db", 1), ["x/web", "y/web"]);
    let f = policy("{key: app, operator: NotIn, values: [web]}");
    assert_eq!(sources(&f, "x/db", 1), ["x/api", "y/api", "z/tool"]);
    let f = policy("{key: tier, operator: Exists}");
    assert_eq!(sources(&f, "x/db", 1), ["x/web"]);
    let f = policy("{key: role, operator: DoesNotExist}");
    assert_eq!(sources(&f, "x/db", 1), ["x/web", "y/web"]);
}

#[test]
fn ip_block_with_except_matches_pods_and_addresses() {
    let f = fixture(&np(
        "cidr",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.1.0/24]}}]}]",
    ));
    // Pods by address: y/* are in the hole.
    assert_eq!(sources(&f, "x/db", 5432), ["x/web", "x/api", "z/tool"]);
    // Non-pod addresses resolve to CIDR identities.
    assert!(f.tcp("10.244.9.9", "x/db", 5432));
    assert!(!f.tcp("10.244.1.200", "x/db", 5432));
    assert!(!f.tcp("8.8.8.8", "x/db", 5432));
    assert!(f.tcp(NODE, "x/db", 5432), "the pod's own node");
    let outer = f.state.ipcache[&net("10.244.0.0/16")];
    let hole = f.state.ipcache[&net("10.244.1.0/24")];
    assert_eq!(f.state.identities[&outer].kind, IdentityKind::Cidr);
    assert_eq!(f.state.identities[&outer].labels, ["cidr:10.244.0.0/16"]);
    let db = f.ips["x/db"];
    let web_id = f.state.endpoints[&f.ips["x/web"]].identity;
    let key = |identity| PolicyKey {
        endpoint: db,
        identity,
        direction: Direction::Ingress,
        proto: 0,
        port: 0,
        port_prefix_len: 0,
    };
    assert!(f.state.entries.contains_key(&key(outer)));
    assert!(f.state.entries.contains_key(&key(web_id)));
    assert!(!f.state.entries.contains_key(&key(hole)));
}

#[test]
fn ip_block_everything_includes_world_and_host() {
    let f = fixture(&np(
        "any",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/24]}}]}]",
    ));
    assert!(f.tcp("8.8.8.8", "x/db", 1));
    assert!(f.tcp(NODE, "x/db", 1));
    assert!(f.tcp("y/api", "x/db", 1));
    assert!(!f.tcp("x/api", "x/db", 1));
    assert!(!f.tcp("10.244.0.99", "x/db", 1));
    // /0 is the world identity, never an ipcache prefix.
    assert!(!f.state.ipcache.contains_key(&net("0.0.0.0/0")));
    assert_eq!(f.state.ipcache[&net("192.168.1.1/32")], ID_HOST);
}

#[test]
fn ports_with_protocol() {
    let f = fixture(&np(
        "ports",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: 5432}, {protocol: UDP, port: 53}]}]",
    ));
    assert!(f.tcp("x/api", "x/db", 5432));
    assert!(!f.tcp("x/api", "x/db", 5433));
    assert!(!f.allowed("x/api", "x/db", Protocol::Udp, 5432));
    assert!(f.allowed("8.8.8.8", "x/db", Protocol::Udp, 53));
    assert!(!f.allowed("x/api", "x/db", Protocol::Sctp, 53));
}

#[test]
fn sctp_only_policy_still_isolates_tcp() {
    let f = fixture(&np(
        "sctp",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{protocol: SCTP}]}]",
    ));
    assert!(f.allowed("x/api", "x/db", Protocol::Sctp, 9));
    assert!(!f.tcp("x/api", "x/db", 9));
    let key = f.state.entries.keys().next().unwrap();
    assert_eq!((key.proto, key.port_prefix_len), (132, 0));
}

#[test]
fn named_ports_ingress_resolve_on_the_endpoint() {
    let f = fixture(&np(
        "named",
        "  podSelector: {matchLabels: {app: web}}\n  ingress: [{ports: [{port: http}, {protocol: UDP, port: dns}]}]\n  policyTypes: [Ingress]",
    ));
    // x/web's http is 8080, y/web is not selected (other namespace).
    assert!(f.tcp("x/api", "x/web", 8080));
    assert!(!f.tcp("x/api", "x/web", 9090));
    assert!(f.allowed("x/api", "x/web", Protocol::Udp, 53));
    assert!(!f.tcp("x/api", "x/web", 53));
    // A pod without the named port gets no entries from it.
    let f = fixture(&np(
        "named-db",
        "  podSelector: {}\n  ingress: [{ports: [{port: http}]}]",
    ));
    assert!(!f.tcp("x/api", "x/db", 8080));
    assert!(f.tcp("x/api", "x/web", 8080));
    let db = f.ips["x/db"];
    assert!(f
        .state
        .entries
        .keys()
        .all(|k| k.endpoint != db || k.identity == ID_HOST));
}

#[test]
fn named_ports_egress_resolve_on_each_peer() {
    let f = fixture(&np(
        "egress-named",
        "  podSelector: {matchLabels: {role: api}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: http}]\n  - to: [{ipBlock: {cidr: 10.244.0.0/16}}]\n    ports: [{port: pg}]",
    ));
    assert!(f.tcp("x/api", "x/web", 8080));
    assert!(f.tcp("x/api", "y/web", 9090));
    // Each peer only on its own number.
    assert!(!f.tcp("x/api", "x/web", 9090));
    assert!(!f.tcp("x/api", "y/web", 8080));
    // A named port with an ipBlock peer allows nothing, even to a pod.
    assert!(!f.tcp("x/api", "x/db", 5432));
    // Empty `to` with a named port: every pod that has the port.
    let f = fixture(&np(
        "egress-any-named",
        "  podSelector: {matchLabels: {role: api}}\n  policyTypes: [Egress]\n  egress: [{ports: [{port: http}]}]",
    ));
    assert!(f.tcp("x/api", "x/web", 8080));
    assert!(f.tcp("x/api", "y/web", 9090));
    assert!(!f.tcp("x/api", "x/db", 8080));
    assert!(!f.tcp("x/api", "8.8.8.8", 8080));
}

#[test]
fn end_port_ranges_become_prefix_blocks() {
    let f = fixture(&np(
        "range",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{ports: [{port: 8000, endPort: 8003}, {port: 80, endPort: 81}]}]",
    ));
    for (port, ok) in [
        (7999, false),
        (8000, true),
        (8003, true),
        (8004, false),
        (80, true),
        (81, true),
        (82, false),
    ] {
        assert_eq!(f.tcp("x/api", "x/db", port), ok, "{port}");
    }
    let blocks: BTreeSet<(u16, u8)> = f
        .state
        .entries
        .keys()
        .filter(|k| k.identity != ID_HOST)
        .map(|k| (k.port, k.port_prefix_len))
        .collect();
    assert_eq!(blocks, BTreeSet::from([(80, 15), (8000, 14)]));
}

#[test]
fn policy_types_explicit_and_defaulted() {
    // Ingress rules of a policy that only lists Egress are ignored.
    let f = fixture(&np(
        "egress-only",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  ingress: [{}]",
    ));
    let db = &f.state.endpoints[&f.ips["x/db"]];
    assert!(db.egress_enforced && !db.ingress_enforced);
    assert!(!f.tcp("x/db", "x/web", 80));
    assert!(f.tcp("x/web", "x/db", 80));
    // Defaulted: egress rules present → Ingress and Egress, and with no
    // ingress rules that is deny-all ingress.
    let f = fixture(&np(
        "defaulted",
        "  podSelector: {matchLabels: {app: db}}\n  egress: [{to: [{podSelector: {matchLabels: {app: web}}}]}]",
    ));
    let db = &f.state.endpoints[&f.ips["x/db"]];
    assert!(db.egress_enforced && db.ingress_enforced);
    assert!(f.tcp("x/db", "x/web", 80));
    assert!(!f.tcp("x/db", "x/api", 80));
    assert!(!f.tcp("x/web", "x/db", 80));
}

#[test]
fn empty_versus_absent_rules() {
    let f = fixture(&np(
        "deny",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: []",
    ));
    assert!(sources(&f, "x/db", 1).is_empty());
    // Deny-all ingress still lets the pod's own node in (kubelet probes).
    assert!(f.tcp(NODE, "x/db", 1));
    let f = fixture(&np(
        "deny-absent",
        "  podSelector: {matchLabels: {app: db}}",
    ));
    assert!(sources(&f, "x/db", 1).is_empty());
    let f = fixture(&np(
        "allow",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{}]",
    ));
    assert_eq!(sources(&f, "x/db", 1).len(), 5);
    assert!(f.tcp("8.8.8.8", "x/db", 1));
    assert!(f.allowed(NODE, "x/db", Protocol::Udp, 7));
    // The allow-all entry, and the node's own.
    assert_eq!(f.state.entries.len(), 2);
    let (k, _) = f.state.entries.iter().next().unwrap();
    assert_eq!((k.identity, k.proto), (ID_ANY, 0));
    // Peers but no ports: every port and protocol from those peers.
    let f = fixture(&np(
        "peers-only",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {}}]}]",
    ));
    assert!(f.allowed("x/api", "x/db", Protocol::Sctp, 65535));
    assert!(!f.tcp("y/api", "x/db", 1));
}

#[test]
fn stacked_policies_are_a_union() {
    let text = np(
        "a",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {role: api}}}], ports: [{port: 1}]}]",
    ) + &np(
        "b",
        "  podSelector: {}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 2}]}]",
    );
    let f = fixture(&text);
    assert_eq!(sources(&f, "x/db", 1), ["x/api"]);
    assert_eq!(sources(&f, "x/db", 2), ["x/web"]);
    assert!(sources(&f, "x/db", 3).is_empty());
    let db = &f.state.endpoints[&f.ips["x/db"]];
    let names: Vec<String> = db
        .selected_by_ingress
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(names, ["a", "b"]);
}

#[test]
fn host_peers() {
    let f = fixture(&np(
        "host",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 192.168.1.0/24}}]}]",
    ));
    assert!(f.tcp(NODE, "x/db", 1));
    assert!(f.tcp("192.168.1.2", "x/db", 1));
    assert!(!f.tcp("x/api", "x/db", 1));
    // Host to pod with a selector policy: the host is not a pod, and still
    // gets in (the pod's own node always does).
    let f = fixture(&np(
        "sel",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {}}]}]",
    ));
    assert!(f.tcp(NODE, "x/db", 1));
    let v = f.engine.evaluate(
        Peer::Ip(NODE.parse().expect("ip")),
        Peer::Pod {
            namespace: "x".into(),
            name: "db".into(),
        },
        Protocol::Tcp,
        1,
    );
    assert_eq!(v.ingress, DirectionVerdict::HostAllowed);
}

// ---- CiliumNetworkPolicy ----

#[test]
fn cilium_endpoint_selector_and_namespaced_from_endpoints() {
    let f = fixture(&cnp(
        "c",
        r#"  endpointSelector: {matchLabels: {"k8s:app": db}}
  ingress:
  - fromEndpoints:
    - matchLabels: {role: api}
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": y, app: web}"#,
    ));
    assert_eq!(sources(&f, "x/db", 1), ["x/api", "y/web"]);
    // Selecting on namespace labels reaches other namespaces.
    let f = fixture(&cnp(
        "c",
        r#"  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints:
    - matchLabels: {"k8s:io.cilium.k8s.namespace.labels.team": blue, role: api}"#,
    ));
    assert_eq!(sources(&f, "x/db", 1), ["y/api"]);
    // The subject never leaves the policy's namespace.
    let f = fixture(&cnp(
        "c",
        "  endpointSelector: {matchLabels: {io.kubernetes.pod.namespace: y}}\n  ingress: [{}]",
    ));
    assert!(f.tcp("x/api", "y/web", 1));
    assert!(!f.tcp("x/api", "x/web", 1));
}

#[test]
fn cilium_empty_rule_denies_and_l4_only_rule_allows_all() {
    let f = fixture(&cnp(
        "c",
        "  endpointSelector: {matchLabels: {app: db}}\n  ingress: [{}]",
    ));
    assert!(sources(&f, "x/db", 1).is_empty());
    assert!(!f.tcp("8.8.8.8", "x/db", 1));
    let f = fixture(&cnp(
        "c",
        "  endpointSelector: {matchLabels: {app: db}}\n  ingress: [{toPorts: [{ports: [{port: \"5432\", protocol: TCP}]}]}]",
    ));
    assert_eq!(sources(&f, "x/db", 5432).len(), 5);
    assert!(f.tcp("8.8.8.8", "x/db", 5432));
    assert!(!f.tcp("x/api", "x/db", 5433));
}

#[test]
fn cilium_to_cidr_and_cidr_set_with_except() {
    let f = fixture(&cnp(
        "c",
        r#"  endpointSelector: {matchLabels: {role: api}}
  egress:
  - toCIDR: [203.0.113.7]
  - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.244.1.0/24]}]
    toPorts: [{ports: [{port: "443"}]}]"#,
    ));
    assert!(f.tcp("x/api", "203.0.113.7", 1));
    assert!(!f.tcp("x/api", "203.0.113.8", 1));
    assert!(f.tcp("x/api", "10.9.9.9", 443));
    assert!(f.allowed("x/api", "10.9.9.9", Protocol::Udp, 443));
    assert!(!f.tcp("x/api", "10.9.9.9", 444));
    assert!(!f.tcp("x/api", "10.244.1.99", 443));
    // Pods in the set match by address, those in the hole do not.
    assert!(f.tcp("x/api", "x/db", 443));
    assert!(!f.tcp("x/api", "y/web", 443));
    // Only pods selected by the endpointSelector are isolated.
    assert!(f.tcp("x/db", "8.8.8.8", 1));
}

#[test]
fn cilium_entities() {
    let egress = |entities: &str| {
        fixture(&cnp(
            "c",
            &format!("  endpointSelector: {{matchLabels: {{app: db}}}}\n  egress: [{{toEntities: [{entities}]}}]"),
        ))
    };
    let f = egress("world");
    assert!(f.tcp("x/db", "8.8.8.8", 1));
    assert!(!f.tcp("x/db", "x/web", 1));
    // The pod's own node is always reachable (Kubernetes semantics).
    assert!(f.tcp("x/db", NODE, 1));
    let f = egress("cluster");
    assert!(f.tcp("x/db", "x/web", 1));
    assert!(f.tcp("x/db", "z/tool", 1));
    assert!(f.tcp("x/db", NODE, 1));
    assert!(!f.tcp("x/db", "8.8.8.8", 1));
    let ids: BTreeSet<u32> = f.state.entries.keys().map(|k| k.identity).collect();
    assert!(ids.is_superset(&BTreeSet::from([ID_HOST, ID_REMOTE_NODE, ID_HEALTH])));
    let f = egress("host");
    assert!(f.tcp("x/db", NODE, 1));
    assert!(!f.tcp("x/db", "x/web", 1));
    let f = egress("all");
    assert!(f.tcp("x/db", "8.8.8.8", 1));
    assert!(f.tcp("x/db", "y/web", 1));
    let ids: Vec<u32> = f.state.entries.keys().map(|k| k.identity).collect();
    assert_eq!(ids, [ID_ANY, ID_HOST], "all, plus the node's own entry");
    for (entity, id) in [("remote-node", ID_REMOTE_NODE), ("health", ID_HEALTH)] {
        let f = egress(entity);
        assert!(!f.tcp("x/db", "x/web", 1));
        let ids: Vec<u32> = f.state.entries.keys().map(|k| k.identity).collect();
        assert_eq!(ids, [ID_HOST, id], "{entity} (and the node's own entry)");
    }
    // world also covers every CIDR identity some policy created.
    let text = cnp(
        "c",
        "  endpointSelector: {matchLabels: {app: db}}\n  egress: [{toEntities: [world]}]",
    ) + &np(
        "other",
        "  podSelector: {matchLabels: {app: nothing}}\n  ingress: [{from: [{ipBlock: {cidr: 8.8.0.0/16}}]}]",
    );
    let f = fixture(&text);
    assert!(f.tcp("x/db", "8.8.8.8", 1));
    assert!(f
        .state
        .entries
        .keys()
        .any(|k| k.identity == f.state.ipcache[&net("8.8.0.0/16")]));
    assert!(f.state.entries.keys().any(|k| k.identity == ID_WORLD));
}

#[test]
fn cilium_to_ports_variants() {
    let f = fixture(&cnp(
        "c",
        r#"  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts:
    - ports: [{port: "53", protocol: ANY}, {port: http, protocol: TCP}]
    - ports: [{port: "9000", endPort: 9001, protocol: UDP}]"#,
    ));
    assert!(f.allowed("x/api", "x/web", Protocol::Udp, 53));
    assert!(f.allowed("x/api", "x/web", Protocol::Sctp, 53));
    assert!(f.tcp("x/api", "x/web", 8080));
    assert!(f.allowed("x/api", "x/web", Protocol::Udp, 9001));
    assert!(!f.tcp("x/api", "x/web", 9001));
}

#[test]
fn deny_wins_over_a_more_specific_allow() {
    let text = cnp(
        "allow",
        r#"  endpointSelector: {matchLabels: {app: db}}
  ingress:
  - fromEndpoints: [{matchLabels: {role: api}}]
    toPorts: [{ports: [{port: "5432", protocol: TCP}]}]
  - toPorts: [{ports: [{port: "5432", protocol: TCP}]}]"#,
    ) + &cnp(
        "block",
        r#"  endpointSelector: {matchLabels: {app: db}}
  ingressDeny:
  - fromEndpoints: [{matchLabels: {role: api}}]"#,
    );
    let f = fixture(&text);
    let v = f.verdict("x/api", "x/db", Protocol::Tcp, 5432);
    let DirectionVerdict::DeniedByRule { rule } = &v.ingress else {
        panic!("{v:?}")
    };
    assert_eq!(rule.to_string(), "x/block ingressDeny[0]");
    // Others still get the L4-only allow.
    assert!(f.tcp("x/web", "x/db", 5432));
    // The 5432 entry for api's identity was turned into that deny.
    let api = f.state.endpoints[&f.ips["x/api"]].identity;
    let db = f.ips["x/db"];
    let specific = PolicyKey {
        endpoint: db,
        identity: api,
        direction: Direction::Ingress,
        proto: 6,
        port: 5432,
        port_prefix_len: 16,
    };
    let e = f.state.entries[&specific];
    assert!(e.deny);
    assert_eq!(
        f.state.rules[&e.rule_id].to_string(),
        "x/block ingressDeny[0]"
    );
    // Deny alone also isolates (Cilium semantics).
    let f = fixture(&cnp(
        "block",
        "  endpointSelector: {matchLabels: {app: db}}\n  egressDeny: [{toPorts: [{ports: [{port: \"53\", protocol: UDP}]}]}]",
    ));
    assert!(!f.allowed("x/db", "x/web", Protocol::Udp, 53));
    assert!(!f.tcp("x/db", "x/web", 80));
}

#[test]
fn deny_for_any_peer_beats_allow_for_one_identity() {
    let text = np(
        "allow",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{podSelector: {matchLabels: {role: api}}}], ports: [{port: 80}]}]",
    ) + &cnp(
        "block",
        "  endpointSelector: {matchLabels: {app: db}}\n  ingressDeny: [{toPorts: [{ports: [{port: \"80\", endPort: 81}]}]}]",
    );
    let f = fixture(&text);
    assert!(!f.tcp("x/api", "x/db", 80));
    assert!(!f.tcp("x/api", "x/db", 81));
    assert!(!f.tcp("x/api", "x/db", 82));
}

#[test]
fn rule_ids_are_stable_and_referenced() {
    let text = np(
        "b",
        "  podSelector: {}\n  ingress: [{}, {ports: [{port: 1}]}]",
    ) + &cnp(
        "a",
        "  endpointSelector: {}\n  egress: [{}]\n  ingressDeny: [{fromEntities: [world]}]",
    );
    let f = fixture(&text);
    let rules = f.engine.rules();
    let listed: Vec<String> = rules.iter().map(|(id, r)| format!("{id} {r}")).collect();
    assert_eq!(
        listed,
        [
            "1 x/b ingress[0]",
            "2 x/b ingress[1]",
            "3 x/a ingressDeny[0]",
            "4 x/a egress[0]",
        ]
    );
    // NetworkPolicy sorts before CiliumNetworkPolicy (by kind).
    assert_eq!(rules[&1].policy.kind, Kind::NetworkPolicy);
    for e in f.state.entries.values() {
        assert!(e.rule_id == RULE_ID_HOST || f.state.rules.contains_key(&e.rule_id));
    }
    // ids in entries only; x/a egress[0] ({}) produces none.
    assert!(!f.state.rules.contains_key(&4));
}

// ---- identities ----

#[test]
fn identities_are_deterministic_across_engines_and_order() {
    let changes = base();
    let mut reversed = changes.clone();
    reversed.reverse();
    let one = Fixture::new(&[NODE], &changes);
    let two = Fixture::new(&[NODE], &reversed);
    assert_eq!(one.state.identities, two.state.identities);
    assert_eq!(one.state.ipcache, two.state.ipcache);
    // Same labels in the same namespace → same identity.
    let mut more = changes.clone();
    more.push(pod(
        "y",
        "api2",
        &[("role", "api")],
        Some("10.244.1.13"),
        &[],
    ));
    let three = Fixture::new(&[NODE], &more);
    let id = |f: &Fixture, p: &str| f.state.ipcache[&net(&format!("{}/32", f.ips[p]))];
    assert_eq!(id(&three, "y/api"), id(&three, "y/api2"));
    assert_eq!(id(&one, "y/api"), id(&three, "y/api2"));
    // Same pod labels in another namespace → another identity.
    assert_ne!(id(&one, "y/api"), id(&one, "x/api"));
    let info = &one.state.identities[&id(&one, "y/api")];
    assert_eq!(info.kind, IdentityKind::Pod);
    assert_eq!(
        info.labels,
        [
            "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=y",
            "k8s:io.cilium.k8s.namespace.labels.team=blue",
            "k8s:io.kubernetes.pod.namespace=y",
            "role=api",
        ]
    );
    assert!(info.id >= 256 && info.id < 1 << 24);
    for (id, name) in [
        (ID_HOST, "host"),
        (ID_WORLD, "world"),
        (ID_HEALTH, "health"),
        (ID_REMOTE_NODE, "remote-node"),
    ] {
        assert_eq!(
            one.state.identities[&id].labels,
            [format!("reserved:{name}")]
        );
    }
    assert!(!one.state.identities.contains_key(&ID_ANY));
}

#[test]
fn namespace_label_change_changes_selection() {
    let policy = manifests(&np(
        "blue",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {team: blue}}}]}]",
    ));
    let mut engine = PolicyEngine::new(vec![NODE.parse().unwrap()]);
    engine.apply(&base());
    engine.apply(&policy);
    let allowed = |e: &PolicyEngine| {
        e.evaluate(
            sluice_core::policy::Peer::Ip("10.244.1.12".parse().unwrap()),
            sluice_core::policy::Peer::Ip("10.244.0.10".parse().unwrap()),
            Protocol::Tcp,
            5432,
        )
        .allowed
    };
    let local: BTreeSet<Ipv4Addr> = ["10.244.0.10".parse().unwrap()].into();
    let before = engine.compile(&local);
    assert!(allowed(&engine));
    engine.apply(&[namespace("y", &[("team", "red")])]);
    assert!(!allowed(&engine));
    let after = engine.compile(&local);
    // y/api's identity moved with its namespace labels; db no longer
    // lists it.
    let y_api = net("10.244.1.12/32");
    assert_ne!(before.ipcache[&y_api], after.ipcache[&y_api]);
    assert!(after
        .entries
        .keys()
        .all(|k| k.identity != after.ipcache[&y_api]));
    // Deleting the policy opens everything again.
    engine.apply(&[Change::Delete(ObjectRef {
        kind: Kind::NetworkPolicy,
        namespace: "x".into(),
        name: "blue".into(),
    })]);
    assert!(allowed(&engine));
    assert!(engine.compile(&local).entries.is_empty());
}

#[test]
fn only_local_pods_get_endpoints_and_entries() {
    let mut engine = PolicyEngine::new(vec![]);
    engine.apply(&base());
    engine.apply(&manifests(&np("all", "  podSelector: {}\n  ingress: [{}]")));
    let db: Ipv4Addr = "10.244.0.10".parse().unwrap();
    let state = engine.compile(&BTreeSet::from([db, "1.2.3.4".parse().unwrap()]));
    assert_eq!(state.endpoints.keys().copied().collect::<Vec<_>>(), [db]);
    assert!(state.entries.keys().all(|k| k.endpoint == db));
    // …but the ipcache covers every pod.
    assert_eq!(state.ipcache.len(), 6);
}

#[test]
fn service_engine_ignores_policies() {
    let text = np("p", "  podSelector: {}\n  ingress: []")
        + &cnp("c", "  endpointSelector: {}\n  ingress: [{}]");
    let changes = manifests(&text);
    let mut engine = Engine::new(CompileConfig::default());
    let plan = engine.apply(&changes);
    assert!(plan.ops.is_empty() && plan.errors.is_empty());
    let deletes: Vec<Change> = changes
        .iter()
        .map(|c| match c {
            Change::Upsert(o) => Change::Delete(o.object_ref()),
            Change::Delete(r) => Change::Delete(r.clone()),
        })
        .collect();
    assert!(engine.apply(&deletes).ops.is_empty());
}

#[test]
fn state_round_trips_through_json() {
    let f = fixture(&np(
        "p",
        "  podSelector: {matchLabels: {app: db}}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: 80}]}]",
    ));
    let json = serde_json::to_string(&f.state).unwrap();
    let back: PolicyState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, f.state);
}
