#![allow(clippy::unwrap_used)]
//! Property test: on random small clusters with random policies, the
//! compiled tables, run through a model of the datapath lookup, decide
//! every connection exactly as `PolicyEngine::evaluate` does.
//!
//! Every pod gets a unique `name` label, so every pod has an identity of
//! its own. Without that, two pods with equal labels but on different sides
//! of an ipBlock boundary would share an identity, and the compiler (by
//! design, conservatively) cannot tell them apart while `evaluate` can.

mod common;

use common::{check_tables, namespace, pod, Fixture};
use proptest::prelude::*;
use serde_json::{json, Value};
use sluice_core::model::Change;
use sluice_core::policy::Peer;
use sluice_core::Protocol;

const NAMESPACES: [&str; 3] = ["a", "b", "c"];
const CIDRS: [&str; 8] = [
    "10.244.0.0/16",
    "10.244.0.0/23",
    "10.244.1.0/24",
    "10.244.2.0/24",
    "10.0.0.0/8",
    "0.0.0.0/0",
    "192.168.0.0/16",
    "8.8.8.8/32",
];
/// Addresses that are not pods: the world, holes, the node.
const OTHER_IPS: [&str; 6] = [
    "8.8.8.8",
    "10.244.1.77",
    "10.244.0.200",
    "192.168.5.5",
    "10.1.2.3",
    "10.244.3.1",
];
const NODE_IPS: [&str; 2] = ["10.244.3.1", "192.168.0.1"];
const PORTS: [u16; 7] = [53, 80, 81, 443, 8080, 8081, 1000];
const PROTOS: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

#[derive(Debug, Clone)]
struct PodSpec {
    ns: usize,
    app: Option<usize>,
    tier: Option<usize>,
    subnet: u8,
    /// (name, protocol, number) candidates taken by mask.
    ports: u8,
    http: u16,
}

fn pod_spec(n_ns: usize) -> impl Strategy<Value = PodSpec> {
    (
        0..n_ns,
        prop::option::of(0..2usize),
        prop::option::of(0..2usize),
        0u8..4,
        0u8..8,
        prop::sample::select(vec![80u16, 8080]),
    )
        .prop_map(|(ns, app, tier, subnet, ports, http)| PodSpec {
            ns,
            app,
            tier,
            subnet,
            ports,
            http,
        })
}

/// A label key with the two values generated for it.
type Key = (&'static str, [&'static str; 2]);

/// A label selector over `keys`, as JSON.
fn selector(keys: &'static [Key]) -> impl Strategy<Value = Value> {
    let label = (0..keys.len(), 0..2usize);
    let expr = (
        0..keys.len(),
        prop::sample::select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        prop::collection::vec(0..2usize, 1..3),
    );
    (
        prop::collection::vec(label, 0..2),
        prop::collection::vec(expr, 0..2),
    )
        .prop_map(move |(labels, exprs)| {
            let mut ml = serde_json::Map::new();
            for (k, v) in labels {
                ml.insert(keys[k].0.to_string(), json!(keys[k].1[v]));
            }
            let me: Vec<Value> = exprs
                .into_iter()
                .map(|(k, op, vals)| {
                    let (key, values) = keys[k];
                    let mut e = json!({"key": key, "operator": op});
                    if op == "In" || op == "NotIn" {
                        e["values"] = json!(vals.iter().map(|&v| values[v]).collect::<Vec<_>>());
                    }
                    e
                })
                .collect();
            json!({"matchLabels": ml, "matchExpressions": me})
        })
}

const POD_KEYS: &[Key] = &[
    ("app", ["v0", "v1"]),
    ("tier", ["v0", "v1"]),
    ("name", ["p0", "p1"]),
];
const NS_KEYS: &[Key] = &[
    ("team", ["v0", "v1"]),
    ("env", ["v0", "v1"]),
    ("kubernetes.io/metadata.name", ["a", "b"]),
];

/// `{cidr, except}` with holes drawn among the CIDRs strictly inside.
fn cidr_block() -> impl Strategy<Value = Value> {
    (0..CIDRS.len(), any::<u8>()).prop_map(|(i, mask)| {
        let outer: ipnet::Ipv4Net = CIDRS[i].parse().unwrap();
        let except: Vec<&str> = CIDRS
            .iter()
            .enumerate()
            .filter(|(j, c)| {
                let n: ipnet::Ipv4Net = c.parse().unwrap();
                mask & (1 << j) != 0 && outer.contains(&n) && n != outer
            })
            .map(|(_, c)| *c)
            .collect();
        json!({"cidr": CIDRS[i], "except": except})
    })
}

fn k8s_peer() -> impl Strategy<Value = Value> {
    prop_oneof![
        selector(POD_KEYS).prop_map(|s| json!({"podSelector": s})),
        selector(NS_KEYS).prop_map(|s| json!({"namespaceSelector": s})),
        (selector(POD_KEYS), selector(NS_KEYS))
            .prop_map(|(p, n)| json!({"podSelector": p, "namespaceSelector": n})),
        cidr_block().prop_map(|b| json!({"ipBlock": b})),
    ]
}

fn k8s_port() -> impl Strategy<Value = Value> {
    let proto = prop::sample::select(vec!["TCP", "UDP", "SCTP"]);
    let port = prop_oneof![
        Just(Value::Null),
        prop::sample::select(PORTS.to_vec()).prop_map(|p| json!(p)),
        prop::sample::select(vec!["http", "dns", "alt"]).prop_map(|p| json!(p)),
    ];
    (
        proto,
        port,
        prop::option::of(prop::sample::select(vec![81u16, 443, 8081])),
    )
        .prop_map(|(proto, port, end)| {
            let mut v = json!({"protocol": proto});
            if !port.is_null() {
                v["port"] = port.clone();
            }
            if let (Some(p), Some(e)) = (port.as_u64(), end) {
                if u64::from(e) >= p {
                    v["endPort"] = json!(e);
                }
            }
            v
        })
}

fn k8s_rule(peers: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(k8s_peer(), 0..3),
        prop::collection::vec(k8s_port(), 0..3),
    )
        .prop_map(move |(p, ports)| json!({peers: p, "ports": ports}))
}

fn network_policy(i: usize, n_ns: usize) -> impl Strategy<Value = Value> {
    (
        0..n_ns,
        selector(POD_KEYS),
        prop::sample::select(vec![
            None,
            Some(vec!["Ingress"]),
            Some(vec!["Egress"]),
            Some(vec!["Ingress", "Egress"]),
        ]),
        prop::option::of(prop::collection::vec(k8s_rule("from"), 0..3)),
        prop::option::of(prop::collection::vec(k8s_rule("to"), 0..3)),
    )
        .prop_map(move |(ns, sel, types, ingress, egress)| {
            let mut spec = json!({"podSelector": sel});
            if let Some(t) = types {
                spec["policyTypes"] = json!(t);
            }
            if let Some(r) = ingress {
                spec["ingress"] = json!(r);
            }
            if let Some(r) = egress {
                spec["egress"] = json!(r);
            }
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": format!("np{i}"), "namespace": NAMESPACES[ns]},
                "spec": spec,
            })
        })
}

/// Cilium endpoint selector: pod keys, sometimes a namespace or a
/// namespace label.
fn cilium_selector() -> impl Strategy<Value = Value> {
    (selector(POD_KEYS), 0..4usize, 0..3usize).prop_map(|(mut s, scope, ns)| {
        match scope {
            1 => s["matchLabels"]["k8s:io.kubernetes.pod.namespace"] = json!(NAMESPACES[ns]),
            2 => s["matchLabels"]["io.cilium.k8s.namespace.labels.team"] = json!("v0"),
            _ => {}
        }
        s
    })
}

fn cilium_port() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["TCP", "UDP", "SCTP", "ANY"]),
        prop_oneof![
            Just(json!("0")),
            prop::sample::select(PORTS.to_vec()).prop_map(|p| json!(p.to_string())),
            prop::sample::select(vec!["http", "dns"]).prop_map(|p| json!(p)),
        ],
    )
        .prop_map(|(proto, port)| json!({"protocol": proto, "port": port}))
}

fn cilium_rule(dir: &'static str) -> impl Strategy<Value = Value> {
    let f = |name: &str| format!("{dir}{name}");
    let (ep, cidr, set, ent) = (f("Endpoints"), f("CIDR"), f("CIDRSet"), f("Entities"));
    (
        prop::collection::vec(cilium_selector(), 0..2),
        prop::collection::vec(0..CIDRS.len(), 0..2),
        prop::collection::vec(cidr_block(), 0..2),
        prop::collection::vec(
            prop::sample::select(vec![
                "world",
                "cluster",
                "host",
                "all",
                "remote-node",
                "health",
            ]),
            0..2,
        ),
        prop::option::of(prop::collection::vec(cilium_port(), 0..3)),
    )
        .prop_map(move |(eps, cidrs, sets, ents, ports)| {
            let mut r = json!({});
            if !eps.is_empty() {
                r[&ep] = json!(eps);
            }
            if !cidrs.is_empty() {
                r[&cidr] = json!(cidrs.iter().map(|&i| CIDRS[i]).collect::<Vec<_>>());
            }
            if !sets.is_empty() {
                r[&set] = json!(sets);
            }
            if !ents.is_empty() {
                r[&ent] = json!(ents);
            }
            if let Some(p) = ports {
                r["toPorts"] = json!([{"ports": p}]);
            }
            r
        })
}

fn cilium_policy(i: usize, n_ns: usize) -> impl Strategy<Value = Value> {
    (
        0..n_ns,
        selector(POD_KEYS),
        prop::collection::vec(cilium_rule("from"), 0..2),
        prop::collection::vec(cilium_rule("from"), 0..2),
        prop::collection::vec(cilium_rule("to"), 0..2),
        prop::collection::vec(cilium_rule("to"), 0..2),
    )
        .prop_map(move |(ns, sel, ing, ing_deny, eg, eg_deny)| {
            json!({
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumNetworkPolicy",
                "metadata": {"name": format!("cnp{i}"), "namespace": NAMESPACES[ns]},
                "spec": {
                    "endpointSelector": sel,
                    "ingress": ing,
                    "ingressDeny": ing_deny,
                    "egress": eg,
                    "egressDeny": eg_deny,
                },
            })
        })
}

/// Mostly NetworkPolicies, sometimes Cilium ones (with deny rules).
fn any_policy(i: usize, n_ns: usize) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => network_policy(i, n_ns),
        1 => cilium_policy(i, n_ns),
    ]
}

#[derive(Debug, Clone)]
struct World {
    changes: Vec<Change>,
    node_ip: &'static str,
    pods: Vec<String>,
    /// Container ports of each pod in `pods`.
    ports: Vec<Vec<(Protocol, u16)>>,
}

fn world() -> impl Strategy<Value = World> {
    (2..=3usize)
        .prop_flat_map(|n_ns| {
            let ns_labels = prop::collection::vec(
                (prop::option::of(0..2usize), prop::option::of(0..2usize)),
                n_ns,
            );
            let pods = prop::collection::vec(pod_spec(n_ns), 2..=6);
            let policies = (1..=4usize)
                .prop_flat_map(move |n| (0..n).map(|i| any_policy(i, n_ns)).collect::<Vec<_>>());
            (
                ns_labels,
                pods,
                policies,
                prop::sample::select(NODE_IPS.to_vec()),
            )
        })
        .prop_map(|(ns_labels, pods, policies, node_ip)| {
            let mut changes = Vec::new();
            for (i, (team, env)) in ns_labels.iter().enumerate() {
                let mut l = Vec::new();
                let vals = ["v0", "v1"];
                if let Some(t) = team {
                    l.push(("team", vals[*t]));
                }
                if let Some(e) = env {
                    l.push(("env", vals[*e]));
                }
                changes.push(namespace(NAMESPACES[i], &l));
            }
            let mut names = Vec::new();
            let mut all_ports = Vec::new();
            for (i, p) in pods.iter().enumerate() {
                let name = format!("p{i}");
                let mut l = vec![("name", name.as_str())];
                let vals = ["v0", "v1"];
                if let Some(a) = p.app {
                    l.push(("app", vals[a]));
                }
                if let Some(t) = p.tier {
                    l.push(("tier", vals[t]));
                }
                let candidates = [
                    ("http", Protocol::Tcp, p.http),
                    ("dns", Protocol::Udp, 53),
                    (
                        "alt",
                        if p.http == 80 {
                            Protocol::Udp
                        } else {
                            Protocol::Tcp
                        },
                        443,
                    ),
                ];
                let ports: Vec<_> = candidates
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| p.ports & (1 << j) != 0)
                    .map(|(_, c)| *c)
                    .collect();
                let ip = format!("10.244.{}.{}", p.subnet, 10 + i);
                changes.push(pod(NAMESPACES[p.ns], &name, &l, Some(&ip), &ports));
                names.push(format!("{}/{name}", NAMESPACES[p.ns]));
                all_ports.push(
                    ports
                        .iter()
                        .map(|&(_, proto, port)| (proto, port))
                        .collect(),
                );
            }
            // A pod without an IP: selectable, never addressable.
            changes.push(pod(
                NAMESPACES[0],
                "pending",
                &[("name", "pending")],
                None,
                &[("http", Protocol::Tcp, 80)],
            ));
            let text = policies
                .iter()
                .map(|p| serde_json::to_string(p).unwrap())
                .collect::<Vec<_>>()
                .join("\n---\n");
            changes.extend(common::manifests(&text));
            World {
                changes,
                node_ip,
                pods: names,
                ports: all_ports,
            }
        })
}

#[derive(Debug, Clone)]
enum End {
    Pod(usize),
    Ip(usize),
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        3 => (0..6usize).prop_map(End::Pod),
        1 => (0..OTHER_IPS.len()).prop_map(End::Ip),
    ]
}

type Query = (End, End, Protocol, u16);

fn query() -> impl Strategy<Value = Query> {
    (
        end(),
        end(),
        prop::sample::select(PROTOS.to_vec()),
        prop::sample::select(PORTS.to_vec()),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn compiled_tables_agree_with_evaluate(
        w in world(),
        queries in prop::collection::vec(query(), 24),
    ) {
        let f = Fixture::new(&[w.node_ip], &w.changes);
        let resolve = |e: &End| -> String {
            match e {
                End::Pod(i) => w.pods[i % w.pods.len()].clone(),
                End::Ip(i) => OTHER_IPS[*i].to_string(),
            }
        };
        for (src, dst, proto, port) in &queries {
            let (src, dst) = (resolve(src), resolve(dst));
            if src == dst {
                continue;
            }
            // Fixture::verdict asserts agreement; also ask with pods given
            // by IP, which must be the same question.
            let v = f.verdict(&src, &dst, *proto, *port);
            let (_, sip) = f.peer(&src);
            let (_, dip) = f.peer(&dst);
            let by_ip = f.engine.evaluate(Peer::Ip(sip), Peer::Ip(dip), *proto, *port);
            prop_assert_eq!(&by_ip, &v);
            check_tables(&f.state, sip, dip, *proto, *port, &v);
        }
        // Random ports rarely hit a named container port; ask for each
        // pod pair on each of the destination's container ports.
        for (i, src) in w.pods.iter().enumerate() {
            for (j, dst) in w.pods.iter().enumerate() {
                if i == j {
                    continue;
                }
                for &(proto, port) in &w.ports[j] {
                    f.verdict(src, dst, proto, port);
                }
            }
        }
    }
}
