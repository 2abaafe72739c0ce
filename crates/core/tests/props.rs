#![allow(clippy::unwrap_used)]
//! Property tests over random change sequences: the plan reaches the desired
//! state, every intermediate map state is consistent, replanning is a no-op,
//! IDs of survivors never move, and a restore + resync is a no-op.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use proptest::prelude::*;
use sluice_core::model::{
    AddressType, Change, ContainerPort, Endpoint, EndpointPort, EndpointSlice, Kind, Meta, Object,
    ObjectRef, Pod, Service, ServicePort, ServiceType, TargetPort, SERVICE_NAME_LABEL,
};
use sluice_core::{plan_full, AppliedState, CompileConfig, Engine, Protocol};

const APPS: [&str; 3] = ["a", "b", "c"];

fn meta(name: String, labels: &[(&str, &str)]) -> Meta {
    Meta {
        name,
        namespace: "default".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        annotations: BTreeMap::new(),
    }
}

fn del(kind: Kind, name: String) -> Change {
    Change::Delete(ObjectRef {
        kind,
        namespace: "default".into(),
        name,
    })
}

fn service(i: u8, app: usize, node_port: bool, two_ports: bool, named: bool) -> Change {
    let mut ports = vec![ServicePort {
        name: "http".into(),
        protocol: Protocol::Tcp,
        port: 80,
        target_port: if named {
            TargetPort::Name("http".into())
        } else {
            TargetPort::Number(8080)
        },
        node_port: node_port.then_some(30000 + u16::from(i)),
    }];
    if two_ports {
        ports.push(ServicePort {
            name: "dns".into(),
            protocol: Protocol::Udp,
            port: 53,
            target_port: TargetPort::Number(53),
            node_port: None,
        });
    }
    Change::Upsert(Object::Service(Service {
        meta: meta(format!("s{i}"), &[]),
        service_type: if node_port {
            ServiceType::NodePort
        } else {
            ServiceType::ClusterIp
        },
        cluster_ip: Some(Ipv4Addr::new(10, 96, 0, i)),
        selector: BTreeMap::from([("app".to_string(), APPS[app].to_string())]),
        ports,
        // Some Services with session affinity: its timeout rides in the master.
        session_affinity_timeout: i.is_multiple_of(3).then_some(30),
        internal_traffic_local: false,
        maglev: i.is_multiple_of(2).then_some(true),
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        external_traffic_local: false,
        health_check_node_port: None,
        prefer_close: false,
        publish_not_ready: false,
    }))
}

fn pod(i: u8, app: usize, ip: Option<u8>, port: u16) -> Change {
    Change::Upsert(Object::Pod(Pod {
        meta: meta(format!("p{i}"), &[("app", APPS[app])]),
        ports: vec![ContainerPort {
            name: Some("http".into()),
            port,
            protocol: Protocol::Tcp,
        }],
        ip: ip.map(|x| Ipv4Addr::new(10, 0, 0, x)),
        ready: true,
        terminating: false,
    }))
}

fn slice(i: u8, svc: u8, eps: Vec<(u8, bool)>, port: u16) -> Change {
    Change::Upsert(Object::EndpointSlice(EndpointSlice {
        meta: meta(format!("e{i}"), &[(SERVICE_NAME_LABEL, &format!("s{svc}"))]),
        service_name: format!("s{svc}"),
        address_type: AddressType::Ipv4,
        endpoints: eps
            .into_iter()
            .map(|(ip, ready)| Endpoint {
                addresses: vec![Ipv4Addr::new(10, 1, 0, ip)],
                ready,
                serving: true,
                terminating: false,
                target_ref: None,
                node_name: None,
                zone_hints: Vec::new(),
            })
            .collect(),
        ports: vec![EndpointPort {
            name: "http".into(),
            port: Some(port),
            protocol: Protocol::Tcp,
        }],
    }))
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        (
            0u8..6,
            0usize..3,
            any::<bool>(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(i, a, np, two, named)| service(i, a, np, two, named)),
        (0u8..6).prop_map(|i| del(Kind::Service, format!("s{i}"))),
        (
            0u8..8,
            0usize..3,
            proptest::option::weighted(0.8, 1u8..6),
            8080u16..8083
        )
            .prop_map(|(i, a, ip, p)| pod(i, a, ip, p)),
        (0u8..8).prop_map(|i| del(Kind::Pod, format!("p{i}"))),
        (
            0u8..4,
            0u8..6,
            proptest::collection::vec((1u8..6, proptest::bool::weighted(0.8)), 0..4),
            7000u16..7002
        )
            .prop_map(|(i, s, eps, p)| slice(i, s, eps, p)),
        (0u8..4).prop_map(|i| del(Kind::EndpointSlice, format!("e{i}"))),
    ]
}

/// Current objects, to replay after a simulated restart.
fn track(objects: &mut BTreeMap<ObjectRef, Object>, c: &Change) {
    match c {
        Change::Upsert(o) => {
            objects.insert(o.object_ref(), o.clone());
        }
        Change::Delete(r) => {
            objects.remove(r);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn plans_are_safe_minimal_and_stable(batches in proptest::collection::vec(proptest::collection::vec(change(), 1..4), 1..25)) {
        let mut engine = Engine::new(CompileConfig::default());
        let mut applied = AppliedState::default();
        let mut objects = BTreeMap::new();
        for batch in &batches {
            let before = engine.desired().clone();
            for c in batch {
                track(&mut objects, c);
            }
            let plan = engine.apply(batch);
            prop_assert!(plan.errors.is_empty(), "{:?}", plan.errors);
            // (b) every intermediate state is consistent.
            for op in &plan.ops {
                applied.apply(op);
                let bad = applied.invariant_violations();
                prop_assert!(bad.is_empty(), "after {:?}: {:?}", op, bad);
            }
            // (a) the plan reaches exactly the desired state.
            prop_assert_eq!(&applied, &AppliedState::from_desired(engine.desired()));
            // (c) nothing changed → nothing to do.
            prop_assert!(engine.apply(&[]).ops.is_empty());
            prop_assert!(plan_full(engine.desired(), &applied).is_empty());
            // (d) survivors keep their IDs.
            for (fe, old) in &before.services {
                if let Some(new) = engine.desired().services.get(fe) {
                    prop_assert_eq!(old.rev_nat_id, new.rev_nat_id);
                }
            }
            let now: BTreeMap<_, _> = engine.backends().iter().map(|(id, a)| (*a, *id)).collect();
            for (id, addr) in &before.backends {
                if let Some(new_id) = now.get(addr) {
                    prop_assert_eq!(id, new_id);
                }
            }
        }
        // (e) restart: restore IDs from the maps, replay the same objects,
        // and a full resync has nothing to do.
        let mut restored = Engine::restore(CompileConfig::default(), &applied).unwrap();
        let replay: Vec<Change> = objects.into_values().map(Change::Upsert).collect();
        restored.apply(&replay);
        prop_assert_eq!(restored.desired(), engine.desired());
        prop_assert!(plan_full(restored.desired(), &applied).is_empty());
    }

    /// Resync from an arbitrary (even garbage) applied state keeps the
    /// invariant after every op and lands on the desired state.
    #[test]
    fn plan_full_repairs_any_state(batch1 in proptest::collection::vec(change(), 1..12), batch2 in proptest::collection::vec(change(), 1..12)) {
        let mut e1 = Engine::new(CompileConfig::default());
        let mut applied = AppliedState::default();
        for op in &e1.apply(&batch1).ops {
            applied.apply(op);
        }
        // A different history produces different IDs: a stale map.
        let mut e2 = Engine::new(CompileConfig::default());
        e2.apply(&batch2);
        for op in plan_full(e2.desired(), &applied) {
            applied.apply(&op);
            let bad = applied.invariant_violations();
            prop_assert!(bad.is_empty(), "after {:?}: {:?}", op, bad);
        }
        prop_assert_eq!(&applied, &AppliedState::from_desired(e2.desired()));
    }
}
