//! Cost of one Service change with N Services present (should be flat),
//! and of a full compile + plan of 100k Services.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sluice_core::model::{
    AddressType, Change, Endpoint, EndpointPort, EndpointSlice, Kind, Meta, Object, ObjectRef,
    Service, ServicePort, ServiceType, TargetPort, SERVICE_NAME_LABEL,
};
use sluice_core::{CompileConfig, Engine, Protocol};

fn main() {
    divan::main();
}

fn meta(name: &str, labels: &[(&str, &str)]) -> Meta {
    Meta {
        name: name.to_string(),
        namespace: "default".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
    }
}

fn ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i)
}

fn service(i: u32) -> Change {
    Change::Upsert(Object::Service(Service {
        meta: meta(&format!("s{i}"), &[]),
        service_type: ServiceType::ClusterIp,
        cluster_ip: Some(Ipv4Addr::from(0x0a60_0000 + i)),
        selector: BTreeMap::new(),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            target_port: TargetPort::Number(8080),
            node_port: None,
        }],
        session_affinity_timeout: None,
        internal_traffic_local: false,
        maglev: None,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        external_traffic_local: false,
        health_check_node_port: None,
        prefer_close: false,
        publish_not_ready: false,
    }))
}

fn slice(i: u32, first_ep: u32) -> Change {
    let svc = format!("s{i}");
    Change::Upsert(Object::EndpointSlice(EndpointSlice {
        meta: meta(&format!("e{i}"), &[(SERVICE_NAME_LABEL, &svc)]),
        service_name: svc,
        address_type: AddressType::Ipv4,
        endpoints: (first_ep..first_ep + 2)
            .map(|e| Endpoint {
                addresses: vec![ip(e)],
                ready: true,
                serving: true,
                terminating: false,
                target_ref: None,
                node_name: None,
                zone_hints: Vec::new(),
            })
            .collect(),
        ports: vec![EndpointPort {
            name: "http".into(),
            port: Some(8080),
            protocol: Protocol::Tcp,
        }],
    }))
}

fn cluster(n: u32) -> Vec<Change> {
    (0..n).flat_map(|i| [service(i), slice(i, 2 * i)]).collect()
}

fn delete(kind: Kind, name: String) -> Change {
    Change::Delete(ObjectRef {
        kind,
        namespace: "default".into(),
        name,
    })
}

/// Add a Service with 2 endpoints, change its endpoints, delete it.
#[divan::bench(args = [1_000, 10_000, 100_000], sample_count = 200)]
fn one_service_change(bencher: divan::Bencher, n: u32) {
    let mut engine = Engine::new(CompileConfig::default());
    engine.apply(&cluster(n));
    let id = n + 1;
    bencher.bench_local(|| {
        let a = engine.apply(&[service(id), slice(id, 4 * n)]);
        let b = engine.apply(&[slice(id, 4 * n + 2)]);
        let c = engine.apply(&[
            delete(Kind::EndpointSlice, format!("e{id}")),
            delete(Kind::Service, format!("s{id}")),
        ]);
        divan::black_box((a, b, c));
    });
}

/// Cold start: compile and plan 100k Services × 2 endpoints.
#[divan::bench(sample_count = 3)]
fn full_compile_100k(bencher: divan::Bencher) {
    let changes = cluster(100_000);
    bencher.bench_local(|| {
        let mut engine = Engine::new(CompileConfig::default());
        let plan = engine.apply(&changes);
        divan::black_box(plan.ops.len());
    });
}
