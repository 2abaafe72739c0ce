#![allow(clippy::unwrap_used)]
//! NetworkPolicy and CiliumNetworkPolicy parsing: accepted shapes, defaults
//! and exact error texts with field paths.

use std::collections::BTreeMap;

use sluice_core::model::Object;
use sluice_core::parse_documents;
use sluice_core::policy::{
    CiliumNetworkPolicy, Entity, LabelSelector, NetworkPolicy, NetworkPolicyPeer, PolicyPort,
    PolicyType, PortMatch, SelectorOperator,
};
use sluice_core::Protocol;

fn errors(text: &str) -> Vec<String> {
    parse_documents("f.yaml", text)
        .rejections
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn one_error(text: &str) -> String {
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    e[0].clone()
}

fn np(text: &str) -> NetworkPolicy {
    let out = parse_documents("f.yaml", text);
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    match &out.objects[0].0 {
        Object::NetworkPolicy(p) => p.clone(),
        other => panic!("not a NetworkPolicy: {other:?}"),
    }
}

fn cnp(text: &str) -> CiliumNetworkPolicy {
    let out = parse_documents("f.yaml", text);
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    match &out.objects[0].0 {
        Object::CiliumNetworkPolicy(p) => p.clone(),
        other => panic!("not a CiliumNetworkPolicy: {other:?}"),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const NP_HEAD: &str =
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\n";
const CNP_HEAD: &str =
    "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: c, namespace: x}\n";

fn np_spec(spec: &str) -> String {
    format!("{NP_HEAD}spec:\n{spec}")
}

fn cnp_spec(spec: &str) -> String {
    format!("{CNP_HEAD}spec:\n{spec}")
}

// ---- NetworkPolicy: accepted shapes ----

#[test]
fn network_policy_full_shape() {
    let p = np(&np_spec(
        r#"
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {role: api}}
    - namespaceSelector:
        matchExpressions:
        - {key: team, operator: In, values: [a, b]}
      podSelector: {}
    - ipBlock: {cidr: 10.244.1.7/4, except: [10.244.0.0/16]}
    ports:
    - {port: 5432}
    - {protocol: UDP, port: dns}
    - {port: 8000, endPort: 8080}
    - {protocol: SCTP}
    - {port: "9090"}
  egress:
  - {}
"#,
    ));
    assert_eq!(p.meta.namespace, "x");
    assert_eq!(p.pod_selector.match_labels, labels(&[("app", "db")]));
    assert_eq!(p.policy_types, [PolicyType::Ingress, PolicyType::Egress]);
    let rule = &p.ingress[0];
    assert!(matches!(
        &rule.peers[0],
        NetworkPolicyPeer::Selector {
            pod_selector: Some(_),
            namespace_selector: None
        }
    ));
    let NetworkPolicyPeer::Selector {
        pod_selector: Some(pods),
        namespace_selector: Some(ns),
    } = &rule.peers[1]
    else {
        panic!("{:?}", rule.peers[1])
    };
    assert!(pods.is_empty());
    assert_eq!(ns.match_expressions[0].operator, SelectorOperator::In);
    let NetworkPolicyPeer::IpBlock(block) = &rule.peers[2] else {
        panic!("{:?}", rule.peers[2])
    };
    // Host bits are cleared: the network containing 10.244.1.7.
    assert_eq!(block.cidr.to_string(), "0.0.0.0/4");
    assert_eq!(block.except[0].to_string(), "10.244.0.0/16");
    let port = |protocol, port| PolicyPort {
        protocol: Some(protocol),
        port,
    };
    assert_eq!(
        rule.ports,
        [
            port(
                Protocol::Tcp,
                PortMatch::Range {
                    start: 5432,
                    end: 5432
                }
            ),
            port(Protocol::Udp, PortMatch::Named("dns".into())),
            port(
                Protocol::Tcp,
                PortMatch::Range {
                    start: 8000,
                    end: 8080
                }
            ),
            port(Protocol::Sctp, PortMatch::All),
            port(
                Protocol::Tcp,
                PortMatch::Range {
                    start: 9090,
                    end: 9090
                }
            ),
        ]
    );
    assert_eq!(p.egress.len(), 1);
    assert!(p.egress[0].peers.is_empty() && p.egress[0].ports.is_empty());
}

#[test]
fn policy_types_default_like_the_api_server() {
    let types = |spec: &str| np(&np_spec(spec)).policy_types;
    assert_eq!(types("  podSelector: {}\n"), [PolicyType::Ingress]);
    assert_eq!(
        types("  egress: [{}]\n"),
        [PolicyType::Ingress, PolicyType::Egress]
    );
    // An empty egress list does not count as egress rules.
    assert_eq!(types("  egress: []\n"), [PolicyType::Ingress]);
    assert_eq!(types("  policyTypes: [Egress]\n"), [PolicyType::Egress]);
    assert_eq!(
        types("  policyTypes: [Egress, Ingress, Egress]\n"),
        [PolicyType::Ingress, PolicyType::Egress]
    );
}

#[test]
fn absent_and_empty_rule_lists() {
    assert!(np(&np_spec("  ingress: []\n")).ingress.is_empty());
    assert!(np(&np_spec("  podSelector: {}\n")).ingress.is_empty());
    let p = np(&np_spec("  ingress: [{from: [], ports: []}]\n"));
    assert!(p.ingress[0].peers.is_empty() && p.ingress[0].ports.is_empty());
    let p = np(&np_spec("  ingress:\n  - from:\n    ports:\n"));
    assert!(p.ingress[0].peers.is_empty() && p.ingress[0].ports.is_empty());
}

#[test]
fn selector_matching_follows_kubernetes() {
    let p = np(&np_spec(
        r#"
  podSelector:
    matchLabels: {app: web}
    matchExpressions:
    - {key: tier, operator: In, values: [a, b]}
    - {key: env, operator: NotIn, values: [prod]}
    - {key: owner, operator: Exists}
    - {key: legacy, operator: DoesNotExist}
"#,
    ));
    let s: &LabelSelector = &p.pod_selector;
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "a"), ("owner", "me")])));
    // NotIn holds when the key is missing, fails on a listed value.
    assert!(!s.matches(&labels(&[
        ("app", "web"),
        ("tier", "a"),
        ("owner", "me"),
        ("env", "prod")
    ])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "c"), ("owner", "me")])));
    assert!(!s.matches(&labels(&[("app", "web"), ("tier", "a")])));
    assert!(!s.matches(&labels(&[
        ("app", "web"),
        ("tier", "a"),
        ("owner", "me"),
        ("legacy", "")
    ])));
    assert!(!s.matches(&labels(&[("tier", "a"), ("owner", "me")])));
    assert!(LabelSelector::default().matches(&labels(&[])));
}

// ---- NetworkPolicy: errors ----

#[test]
fn invalid_operator_names_the_full_path() {
    let text = np_spec(
        r#"
  ingress:
  - from:
    - podSelector: {}
    - podSelector:
        matchExpressions: [{key: a, operator: Is, values: [b]}]
"#,
    );
    assert_eq!(
        one_error(&text),
        "f.yaml: NetworkPolicy x/p: spec.ingress[0].from[1].podSelector.matchExpressions[0].operator: \"Is\" is not one of In, NotIn, Exists, DoesNotExist"
    );
}

#[test]
fn selector_value_rules() {
    let cases = [
        (
            "  podSelector: {matchExpressions: [{key: a, operator: In}]}\n",
            "spec.podSelector.matchExpressions[0].values: must be non-empty for In and NotIn",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a, operator: NotIn, values: []}]}\n",
            "spec.podSelector.matchExpressions[0].values: must be non-empty for In and NotIn",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}\n",
            "spec.podSelector.matchExpressions[0].values: must be empty for Exists and DoesNotExist",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a, operator: DoesNotExist, values: [b]}]}\n",
            "spec.podSelector.matchExpressions[0].values: must be empty for Exists and DoesNotExist",
        ),
        (
            "  podSelector: {matchExpressions: [{operator: Exists}]}\n",
            "spec.podSelector.matchExpressions[0].key: is required",
        ),
        (
            "  podSelector: {matchExpressions: [{key: a}]}\n",
            "spec.podSelector.matchExpressions[0].operator: is required",
        ),
        (
            "  egress: [{to: [{namespaceSelector: {matchExpressions: [{key: a, operator: in, values: [b]}]}}]}]\n",
            "spec.egress[0].to[0].namespaceSelector.matchExpressions[0].operator: \"in\" is not one of In, NotIn, Exists, DoesNotExist",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(
            one_error(&np_spec(spec)),
            format!("f.yaml: NetworkPolicy x/p: {want}"),
            "{spec}"
        );
    }
}

#[test]
fn ip_block_rules() {
    let cases = [
        (
            "ipBlock: {cidr: 10.1.0.0/16, except: [10.0.0.0/8]}",
            "spec.ingress[0].from[0].ipBlock.except[0]: 10.0.0.0/8 is not inside 10.1.0.0/16",
        ),
        (
            "ipBlock: {cidr: 10.1.0.0/16, except: [10.2.0.0/24]}",
            "spec.ingress[0].from[0].ipBlock.except[0]: 10.2.0.0/24 is not inside 10.1.0.0/16",
        ),
        (
            "ipBlock: {cidr: 10.1.0.0/16, except: [10.1.0.0/33]}",
            "spec.ingress[0].from[0].ipBlock.except[0]: \"10.1.0.0/33\" is not an IPv4 CIDR",
        ),
        (
            "ipBlock: {cidr: 10.1.0.0}",
            "spec.ingress[0].from[0].ipBlock.cidr: \"10.1.0.0\" is not a CIDR (expected address/prefix-length)",
        ),
        (
            "ipBlock: {cidr: banana/8}",
            "spec.ingress[0].from[0].ipBlock.cidr: \"banana/8\" is not an IPv4 CIDR",
        ),
        (
            "ipBlock: {cidr: \"fd00::/8\"}",
            "spec.ingress[0].from[0].ipBlock.cidr: fd00::/8: IPv6 not supported yet",
        ),
        ("ipBlock: {except: []}", "spec.ingress[0].from[0].ipBlock.cidr: is required"),
        (
            "{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}",
            "spec.ingress[0].from[0].ipBlock: may not be combined with podSelector or namespaceSelector",
        ),
        (
            "{}",
            "spec.ingress[0].from[0]: must specify one of podSelector, namespaceSelector or ipBlock",
        ),
    ];
    for (peer, want) in cases {
        let text = np_spec(&format!("  ingress:\n  - from:\n    - {peer}\n"));
        assert_eq!(
            one_error(&text),
            format!("f.yaml: NetworkPolicy x/p: {want}"),
            "{peer}"
        );
    }
    // Equal to the block is inside it.
    np(&np_spec(
        "  ingress: [{from: [{ipBlock: {cidr: 10.1.0.0/16, except: [10.1.0.0/16, 10.1.2.3/32]}}]}]\n",
    ));
}

#[test]
fn port_rules() {
    let cases = [
        ("{port: 0}", "spec.ingress[0].ports[0].port: 0 is out of range"),
        ("{port: 70000}", "spec.ingress[0].ports[0].port: 70000 is out of range"),
        (
            "{port: HTTP_1}",
            "spec.ingress[0].ports[0].port: \"HTTP_1\" is not a valid port name (1-15 lowercase letters, digits and '-', with at least one letter)",
        ),
        (
            "{port: a-very-long-port-name}",
            "spec.ingress[0].ports[0].port: \"a-very-long-port-name\" is not a valid port name (1-15 lowercase letters, digits and '-', with at least one letter)",
        ),
        (
            "{port: \"\"}",
            "spec.ingress[0].ports[0].port: \"\" is not a valid port name (1-15 lowercase letters, digits and '-', with at least one letter)",
        ),
        ("{endPort: 90}", "spec.ingress[0].ports[0].endPort: requires a numeric port"),
        ("{port: http, endPort: 90}", "spec.ingress[0].ports[0].endPort: requires a numeric port"),
        ("{port: 90, endPort: 80}", "spec.ingress[0].ports[0].endPort: 80 is less than port 90"),
        ("{port: 90, endPort: 65536}", "spec.ingress[0].ports[0].endPort: 65536 is out of range"),
        (
            "{protocol: ICMP}",
            "spec.ingress[0].ports[0].protocol: \"ICMP\" is not one of TCP, UDP, SCTP",
        ),
        (
            "{protocol: tcp, port: 80}",
            "spec.ingress[0].ports[0].protocol: \"tcp\" is not one of TCP, UDP, SCTP",
        ),
    ];
    for (port, want) in cases {
        let text = np_spec(&format!("  ingress:\n  - ports:\n    - {port}\n"));
        assert_eq!(
            one_error(&text),
            format!("f.yaml: NetworkPolicy x/p: {want}"),
            "{port}"
        );
    }
    let p = np(&np_spec(
        "  ingress: [{ports: [{port: 80, endPort: 80}, {port: web-2}]}]\n",
    ));
    assert_eq!(
        p.ingress[0].ports[0].port,
        PortMatch::Range { start: 80, end: 80 }
    );
    assert_eq!(p.ingress[0].ports[1].port, PortMatch::Named("web-2".into()));
}

#[test]
fn policy_types_must_be_known() {
    assert_eq!(
        one_error(&np_spec("  policyTypes: [Ingress, Both]\n")),
        "f.yaml: NetworkPolicy x/p: spec.policyTypes[1]: \"Both\" is not one of Ingress, Egress"
    );
}

#[test]
fn network_policy_rejects_unknown_fields_with_their_path() {
    assert_eq!(
        one_error(&np_spec("  podSelectr: {}\n")),
        "f.yaml: NetworkPolicy x/p: spec.podSelectr: unknown field `podSelectr`, expected one of `podSelector`, `policyTypes`, `ingress`, `egress`"
    );
    assert_eq!(
        one_error(&np_spec("  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, exept: []}}]}]\n")),
        "f.yaml: NetworkPolicy x/p: spec.ingress[0].from[0].ipBlock.exept: unknown field `exept`, expected `cidr` or `except`"
    );
    // Metadata is not checked: real objects carry uid, resourceVersion, …
    np("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  uid: abc\n  resourceVersion: \"1\"\nspec: {}\n");
}

#[test]
fn namespace_defaults_and_other_api_groups_are_refused() {
    let p = np(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n",
    );
    assert_eq!(p.meta.namespace, "default");
    assert_eq!(
        one_error("apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n"),
        "f.yaml: NetworkPolicy default/p: apiVersion: \"projectcalico.org/v3\" is not supported for NetworkPolicy (expected networking.k8s.io/v1)"
    );
    assert_eq!(
        one_error("apiVersion: cilium.io/v2alpha1\nkind: CiliumNetworkPolicy\nmetadata: {name: c}\nspec: {endpointSelector: {}}\n"),
        "f.yaml: CiliumNetworkPolicy default/c: apiVersion: \"cilium.io/v2alpha1\" is not supported for CiliumNetworkPolicy (expected cilium.io/v2)"
    );
}

// ---- CiliumNetworkPolicy: accepted shapes ----

#[test]
fn cilium_policy_full_shape() {
    let p = cnp(&cnp_spec(
        r#"
  description: "db access"
  endpointSelector:
    matchLabels: {"k8s:app": db}
  ingress:
  - fromEndpoints:
    - matchLabels: {role: api}
    - matchLabels: {"k8s:io.kubernetes.pod.namespace": y, app: x}
    - matchExpressions: [{key: "io.cilium.k8s.namespace.labels.team", operator: Exists}]
    toPorts:
    - ports:
      - {port: "5432", protocol: TCP}
      - {port: 53, protocol: ANY}
      - {port: "8000", endPort: 8080}
      - {port: http}
  - fromCIDR: [192.0.2.1, 198.51.100.0/24]
    fromCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
    fromEntities: [world, cluster, host, all, remote-node, health]
  - toPorts: [{}]
  ingressDeny:
  - fromEntities: [world]
  egress:
  - toEndpoints: [{}]
    toCIDR: [203.0.113.0/24]
    toCIDRSet: [{cidr: 0.0.0.0/0}]
    toEntities: [world]
  egressDeny:
  - toPorts: [{ports: [{port: "0", protocol: UDP}]}]
"#,
    ));
    // The subject is pinned to the policy's namespace; k8s: is dropped.
    assert_eq!(
        p.endpoint_selector.match_labels,
        labels(&[("app", "db"), ("io.kubernetes.pod.namespace", "x")])
    );
    let r = &p.ingress[0];
    assert_eq!(
        r.endpoints[0].match_labels,
        labels(&[("role", "api"), ("io.kubernetes.pod.namespace", "x")])
    );
    // An explicit namespace is kept as written.
    assert_eq!(
        r.endpoints[1].match_labels,
        labels(&[("app", "x"), ("io.kubernetes.pod.namespace", "y")])
    );
    // Selecting on namespace labels lifts the same-namespace scope.
    assert!(r.endpoints[2].match_labels.is_empty());
    assert_eq!(
        r.ports,
        [
            PolicyPort {
                protocol: Some(Protocol::Tcp),
                port: PortMatch::Range {
                    start: 5432,
                    end: 5432
                }
            },
            PolicyPort {
                protocol: None,
                port: PortMatch::Range { start: 53, end: 53 }
            },
            PolicyPort {
                protocol: None,
                port: PortMatch::Range {
                    start: 8000,
                    end: 8080
                }
            },
            PolicyPort {
                protocol: None,
                port: PortMatch::Named("http".into())
            },
        ]
    );
    let r = &p.ingress[1];
    let cidrs: Vec<String> = r.cidrs.iter().map(|b| b.cidr.to_string()).collect();
    assert_eq!(cidrs, ["192.0.2.1/32", "198.51.100.0/24", "10.0.0.0/8"]);
    assert_eq!(r.cidrs[2].except[0].to_string(), "10.1.0.0/16");
    assert_eq!(
        r.entities,
        [
            Entity::World,
            Entity::Cluster,
            Entity::Host,
            Entity::All,
            Entity::RemoteNode,
            Entity::Health
        ]
    );
    assert_eq!(
        p.ingress[2].ports,
        [PolicyPort {
            protocol: None,
            port: PortMatch::All
        }]
    );
    assert_eq!(p.ingress_deny[0].entities, [Entity::World]);
    assert_eq!(p.egress[0].cidrs[1].cidr.to_string(), "0.0.0.0/0");
    assert_eq!(
        p.egress_deny[0].ports,
        [PolicyPort {
            protocol: Some(Protocol::Udp),
            port: PortMatch::All
        }]
    );
}

// ---- CiliumNetworkPolicy: errors ----

#[test]
fn cilium_policy_rejects_unknown_fields_with_their_path() {
    let cases = [
        (
            "  endpointSelector: {}\n  ingress: [{fromEndpointz: [{}]}]\n",
            "spec.ingress[0].fromEndpointz: unknown field `fromEndpointz`, expected one of `fromEndpoints`, `fromCIDR`, `fromCIDRSet`, `fromEntities`, `toPorts`",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{toEndpoints: [{}]}]\n",
            "spec.ingress[0].toEndpoints: unknown field `toEndpoints`, expected one of `fromEndpoints`, `fromCIDR`, `fromCIDRSet`, `fromEntities`, `toPorts`",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"80\"}], rules: {http: [{}]}}]}]\n",
            "spec.egress[0].toPorts[0].rules: unknown field `rules`, expected `ports`",
        ),
        (
            "  endpointSelector: {}\n  egressDeny: [{toFQDNs: [{matchName: a.b}]}]\n",
            "spec.egressDeny[0].toFQDNs: unknown field `toFQDNs`, expected one of `toEndpoints`, `toCIDR`, `toCIDRSet`, `toEntities`, `toPorts`",
        ),
        (
            "  endpointSelector: {matchLabel: {a: b}}\n",
            "spec.endpointSelector.matchLabel: unknown field `matchLabel`, expected `matchLabels` or `matchExpressions`",
        ),
        (
            "  nodeSelector: {}\n",
            "spec.nodeSelector: unknown field `nodeSelector`, expected one of `endpointSelector`, `ingress`, `ingressDeny`, `egress`, `egressDeny`, `description`",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(
            one_error(&cnp_spec(spec)),
            format!("f.yaml: CiliumNetworkPolicy x/c: {want}"),
            "{spec}"
        );
    }
}

#[test]
fn cilium_policy_field_errors() {
    let cases = [
        ("  ingress: []\n", "spec.endpointSelector: is required"),
        (
            "  endpointSelector: {}\n  ingress: [{fromEntities: [world, cluster, everything]}]\n",
            "spec.ingress[0].fromEntities[2]: \"everything\" is not one of all, world, cluster, host, remote-node, health",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"80\", protocol: ICMP}]}]}]\n",
            "spec.egress[0].toPorts[0].ports[0].protocol: \"ICMP\" is not one of TCP, UDP, SCTP, ANY",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"99999\"}]}]}]\n",
            "spec.egress[0].toPorts[0].ports[0].port: 99999 is out of range",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: \"90\", endPort: 80}]}]}]\n",
            "spec.egress[0].toPorts[0].ports[0].endPort: 80 is less than port 90",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{endPort: 80}]}]}]\n",
            "spec.egress[0].toPorts[0].ports[0].endPort: requires a non-zero port",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toPorts: [{ports: [{port: Web!}]}]}]\n",
            "spec.egress[0].toPorts[0].ports[0].port: \"Web!\" is not a valid port name (1-15 lowercase letters, digits and '-', with at least one letter)",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{fromEndpoints: [{matchLabels: {\"reserved:host\": \"\"}}]}]\n",
            "spec.ingress[0].fromEndpoints[0].matchLabels[reserved:host]: label source \"reserved\" is not supported (only k8s: and any:); use fromEntities/toEntities for reserved identities",
        ),
        (
            "  endpointSelector: {}\n  ingress: [{fromEndpoints: [{matchExpressions: [{key: a, operator: Has}]}]}]\n",
            "spec.ingress[0].fromEndpoints[0].matchExpressions[0].operator: \"Has\" is not one of In, NotIn, Exists, DoesNotExist",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toCIDR: [\"2001:db8::/32\"]}]\n",
            "spec.egress[0].toCIDR[0]: 2001:db8::/32: IPv6 not supported yet",
        ),
        (
            "  endpointSelector: {}\n  egress: [{toCIDRSet: [{cidr: 10.0.0.0/16, except: [10.0.0.0/8]}]}]\n",
            "spec.egress[0].toCIDRSet[0].except[0]: 10.0.0.0/8 is not inside 10.0.0.0/16",
        ),
        (
            "  endpointSelector: {}\n  ingressDeny: [{fromCIDR: [10.0.0.300]}]\n",
            "spec.ingressDeny[0].fromCIDR[0]: \"10.0.0.300\" is not an IPv4 CIDR",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(
            one_error(&cnp_spec(spec)),
            format!("f.yaml: CiliumNetworkPolicy x/c: {want}"),
            "{spec}"
        );
    }
    assert_eq!(
        one_error(CNP_HEAD),
        "f.yaml: CiliumNetworkPolicy x/c: spec: is required"
    );
    assert_eq!(
        one_error(&format!("{CNP_HEAD}specs: [{{endpointSelector: {{}}}}]\n")),
        "f.yaml: CiliumNetworkPolicy x/c: specs: several rule sets in one policy are not supported yet; use one CiliumNetworkPolicy per rule set"
    );
}
