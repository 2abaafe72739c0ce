#![allow(clippy::unwrap_used)]
//! Parsing and validation: accepted shapes and exact error texts.

use sluice_core::model::{Object, ServiceType, TargetPort};
use sluice_core::{parse_documents, parse_documents_with, CompileConfig};

fn errors(file: &str, text: &str) -> Vec<String> {
    parse_documents(file, text)
        .rejections
        .iter()
        .map(ToString::to_string)
        .collect()
}

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  clusterIP: 10.96.0.10
  sessionAffinity: None
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
    nodePort: 30080
  - name: dns
    protocol: UDP
    port: 53
"#;

#[test]
fn parses_service_with_defaults() {
    let out = parse_documents("svc.yaml", WEB);
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    let (Object::Service(s), r) = &out.objects[0] else {
        panic!("not a service")
    };
    assert_eq!(r.to_string(), "Service default/web");
    assert_eq!(s.service_type, ServiceType::NodePort);
    assert_eq!(s.ports[0].target_port, TargetPort::Name("http".into()));
    assert_eq!(s.ports[0].node_port, Some(30080));
    assert_eq!(s.ports[1].target_port, TargetPort::Number(53));
    assert_eq!(s.ports[1].protocol.as_u8(), 17);
}

#[test]
fn port_out_of_range_names_object_and_field() {
    let text = WEB.replace("port: 53", "port: 70000");
    assert_eq!(
        errors("services.yaml", &text),
        ["services.yaml: Service default/web: spec.ports[1].port: 70000 is out of range"]
    );
}

#[test]
fn one_bad_document_does_not_stop_the_others() {
    let text = format!(
        "{WEB}\n---\nkind: Service\nmetadata: {{name: [unclosed\n---\nkind: Deployment\nmetadata: {{name: d}}\n---\n# only a comment\n---\nkind: Namespace\nmetadata: {{name: prod}}\n"
    );
    let out = parse_documents("f.yaml", &text);
    assert_eq!(out.objects.len(), 2);
    let errs: Vec<String> = out.rejections.iter().map(ToString::to_string).collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(errs[0].starts_with("f.yaml: document 2: "), "{}", errs[0]);
    assert_eq!(
        errs[1],
        "f.yaml: document 3: kind: \"Deployment\" is not supported (expected Namespace, Pod, Service, EndpointSlice, NetworkPolicy or CiliumNetworkPolicy)"
    );
}

#[test]
fn validation_messages() {
    let cases = [
        (
            "clusterIP: 10.96.0.10",
            "clusterIP: fd00::1",
            "spec.clusterIP: fd00::1: IPv6 not supported yet",
        ),
        (
            "clusterIP: 10.96.0.10",
            "clusterIP: 10.96.0",
            "spec.clusterIP: \"10.96.0\" is not an IPv4 address",
        ),
        (
            "protocol: UDP",
            "protocol: ICMP",
            "spec.ports[1].protocol: \"ICMP\" is not one of TCP, UDP, SCTP",
        ),
        (
            "nodePort: 30080",
            "nodePort: 80",
            "spec.ports[0].nodePort: 80 is outside the node port range 30000-32767",
        ),
        (
            "port: 53",
            "port: 0",
            "spec.ports[1].port: 0 is out of range",
        ),
        (
            "port: 53",
            "port: 80",
            "spec.ports[1]: port 80/TCP duplicates spec.ports[0]",
        ),
        (
            "type: NodePort",
            "type: Weird",
            "spec.type: \"Weird\" is not one of ClusterIP, NodePort, LoadBalancer, ExternalName",
        ),
    ];
    for (from, to, want) in cases {
        let text = WEB.replace(from, to);
        // The UDP→TCP duplicate case needs the protocol line gone too.
        let text = if want.contains("duplicates") {
            text.replace("protocol: UDP", "protocol: TCP")
        } else {
            text
        };
        assert_eq!(
            errors("s.yaml", &text),
            [format!("s.yaml: Service default/web: {want}")],
            "case {to}"
        );
    }
}

#[test]
fn node_port_range_is_configurable() {
    let cfg = CompileConfig {
        node_port_range: 80..=100,
        ..CompileConfig::default()
    };
    let text = WEB.replace("nodePort: 30080", "nodePort: 90");
    assert!(parse_documents_with("s.yaml", &text, &cfg)
        .rejections
        .is_empty());
}

#[test]
fn ignored_services_parse_without_error() {
    let headless =
        "kind: Service\nmetadata: {name: h}\nspec: {clusterIP: None, ports: [{port: 80}]}\n";
    let ext = "kind: Service\nmetadata: {name: e}\nspec: {type: ExternalName, externalName: example.com}\n";
    for text in [headless, ext] {
        let out = parse_documents("s.yaml", text);
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        let Object::Service(s) = &out.objects[0].0 else {
            panic!()
        };
        assert!(!s.is_proxied());
    }
}

#[test]
fn missing_names_and_labels() {
    assert_eq!(
        errors("p.yaml", "kind: Pod\nmetadata: {}\n"),
        ["p.yaml: document 1: metadata.name: is required"]
    );
    assert_eq!(
        errors(
            "e.yaml",
            "kind: EndpointSlice\nmetadata: {name: web-1}\naddressType: IPv4\nendpoints: []\n"
        ),
        ["e.yaml: EndpointSlice default/web-1: metadata.labels[kubernetes.io/service-name]: is required"]
    );
}

#[test]
fn endpoint_slice_and_pod() {
    let text = r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc
  namespace: prod
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: false, serving: true, terminating: true}
  targetRef: {kind: Pod, namespace: prod, name: web-1}
  nodeName: node-a
- addresses: [10.0.0.2]
ports:
- {name: http, port: 8080, protocol: TCP}
---
kind: Pod
metadata: {name: web-1, namespace: prod, labels: {app: web}}
spec:
  containers:
  - name: c
    image: nginx
    ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.0.0.1, phase: Running}
"#;
    let out = parse_documents("x.yaml", text);
    assert!(out.rejections.is_empty(), "{:?}", out.rejections);
    let Object::EndpointSlice(e) = &out.objects[0].0 else {
        panic!()
    };
    assert_eq!(e.service_name, "web");
    assert!(!e.endpoints[0].ready);
    assert!(e.endpoints[1].ready, "unset ready means ready");
    let Object::Pod(p) = &out.objects[1].0 else {
        panic!()
    };
    assert_eq!(p.ip, Some("10.0.0.1".parse().unwrap()));
    assert_eq!(p.ports[0].port, 8080);
}

#[test]
fn wrong_shape_is_a_yaml_error_with_name() {
    let errs = errors(
        "s.yaml",
        "kind: Service\nmetadata: {name: w}\nspec: {ports: 3}\n",
    );
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("s.yaml: Service default/w: "),
        "{}",
        errs[0]
    );
}

#[test]
fn session_affinity_is_validated_with_kubernetes_defaults() {
    let svc = |extra: &str| {
        format!(
            "kind: Service\nmetadata: {{name: s}}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{{port: 80}}]\n{extra}"
        )
    };
    let timeout_of = |text: &str| {
        let out = parse_documents("s.yaml", text);
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        match &out.objects[0].0 {
            Object::Service(s) => s.session_affinity_timeout,
            _ => panic!("not a service"),
        }
    };
    assert_eq!(timeout_of(&svc("")), None);
    assert_eq!(timeout_of(&svc("  sessionAffinity: None\n")), None);
    assert_eq!(
        timeout_of(&svc("  sessionAffinity: ClientIP\n")),
        Some(10800)
    );
    assert_eq!(
        timeout_of(&svc(
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 30}}\n"
        )),
        Some(30)
    );
    for (t, shown) in [("0", "0"), ("86401", "86401"), ("-5", "-5")] {
        let errs = errors(
            "s.yaml",
            &svc(&format!(
                "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {{clientIP: {{timeoutSeconds: {t}}}}}\n"
            )),
        );
        assert_eq!(
            errs,
            vec![format!("s.yaml: Service default/s: spec.sessionAffinityConfig.clientIP.timeoutSeconds: {shown} is out of range (1..=86400)")]
        );
    }
    assert_eq!(
        errors("s.yaml", &svc("  sessionAffinity: Sticky\n")),
        vec![r#"s.yaml: Service default/s: spec.sessionAffinity: "Sticky" is not one of None, ClientIP"#.to_string()]
    );
}

#[test]
fn lb_algorithm_annotation_is_validated() {
    let svc = |value: &str| {
        format!(
            "kind: Service\nmetadata: {{name: s, annotations: {{sluice.io/lb-algorithm: {value}}}}}\nspec:\n  clusterIP: 10.96.0.10\n  ports: [{{port: 80}}]\n"
        )
    };
    let maglev_of = |text: &str| match &parse_documents("s.yaml", text).objects[0].0 {
        Object::Service(s) => s.maglev,
        _ => panic!("not a service"),
    };
    assert_eq!(maglev_of(&svc("maglev")), Some(true));
    assert_eq!(maglev_of(&svc("random")), Some(false));
    assert_eq!(
        errors("s.yaml", &svc("round-robin")),
        vec![r#"s.yaml: Service default/s: metadata.annotations["sluice.io/lb-algorithm"]: "round-robin" is not one of maglev, random"#.to_string()]
    );
}
