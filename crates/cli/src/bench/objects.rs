//! The Services a benchmark programs: N ClusterIP Services, each with an
//! EndpointSlice naming the same backend pods, as ordinary Kubernetes YAML.
//! The same text feeds the agent (through its manifest folder) and the
//! baselines (through sluice-core's compiler), so every mode serves
//! exactly the same objects.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Service port and the workload port behind it (the HTTP server that
/// answers with the pod's name).
pub const SERVICE_PORT: u16 = 80;
pub const TARGET_PORT: u16 = 8080;

/// Cluster IP of Service `i`: 10.96.0.0/12 holds a million; start past .0.
pub fn vip(i: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 96, 0, 0));
    Ipv4Addr::from(base + 10 + i as u32)
}

/// One Service with an EndpointSlice for `endpoints`.
pub fn service(name: &str, vip: Ipv4Addr, endpoints: &[Ipv4Addr]) -> String {
    let mut s = String::with_capacity(600);
    let _ = write!(
        s,
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: bench\nspec:\n  clusterIP: {vip}\n  ports:\n  - name: http\n    port: {SERVICE_PORT}\n    targetPort: {TARGET_PORT}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: bench\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: http\n  port: {TARGET_PORT}\n  protocol: TCP\nendpoints:\n"
    );
    for ep in endpoints {
        let _ = write!(
            s,
            "- addresses: [\"{ep}\"]\n  conditions: {{ready: true}}\n"
        );
    }
    s
}

/// A UDP Service `port` → `port` with an EndpointSlice for `endpoints`
/// (the flow-event benchmark's datagram target).
pub fn udp_service(name: &str, vip: Ipv4Addr, port: u16, endpoints: &[Ipv4Addr]) -> String {
    let mut s = format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: bench\nspec:\n  clusterIP: {vip}\n  ports:\n  - name: udp\n    protocol: UDP\n    port: {port}\n    targetPort: {port}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: bench\n  labels:\n    kubernetes.io/service-name: {name}\naddressType: IPv4\nports:\n- name: udp\n  port: {port}\n  protocol: UDP\nendpoints:\n"
    );
    for ep in endpoints {
        let _ = write!(
            s,
            "- addresses: [\"{ep}\"]\n  conditions: {{ready: true}}\n"
        );
    }
    s
}

/// `n` Services `svc-0 … svc-(n-1)`.
pub fn services(n: usize, endpoints: &[Ipv4Addr]) -> String {
    let mut s = String::with_capacity(n * 600);
    for i in 0..n {
        s.push_str(&service(&format!("svc-{i}"), vip(i), endpoints));
    }
    s
}

/// Compiles YAML the way the agent does, for the baselines.
pub fn desired(text: &str) -> anyhow::Result<sluice_core::DesiredState> {
    let out = sluice_core::parse_documents("bench.yaml", text);
    if let Some(r) = out.rejections.first() {
        anyhow::bail!("benchmark objects rejected: {r}");
    }
    let mut store = sluice_core::Store::new();
    let changes = store.replace_file("bench.yaml", out);
    let mut engine = sluice_core::Engine::new(sluice_core::CompileConfig::default());
    let plan = engine.apply(&changes);
    if let Some(e) = plan.errors.first() {
        anyhow::bail!("benchmark objects did not compile: {e}");
    }
    Ok(engine.desired().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_objects_compile_to_one_frontend_each_with_all_endpoints() {
        let eps = [Ipv4Addr::new(10, 244, 0, 3), Ipv4Addr::new(10, 244, 0, 4)];
        let d = desired(&services(50, &eps)).unwrap_or_default();
        assert_eq!(d.services.len(), 50);
        assert!(d.services.values().all(|s| s.backend_ids.len() == 2));
        assert_eq!(vip(0), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(vip(300), Ipv4Addr::new(10, 96, 1, 54));
    }

    #[test]
    fn udp_service_compiles_to_one_udp_frontend() {
        let d = desired(&udp_service(
            "u",
            vip(999_000),
            9999,
            &[Ipv4Addr::new(10, 244, 0, 4)],
        ))
        .unwrap_or_default();
        assert_eq!(d.services.len(), 1);
        assert!(d.services.values().all(|s| s.backend_ids.len() == 1));
        // Still inside the service CIDR 10.96.0.0/12.
        assert_eq!(vip(999_000), Ipv4Addr::new(10, 111, 62, 98));
    }
}
