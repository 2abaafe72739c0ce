//! The CNI commands.

use crate::agent::Agent;
use crate::config::{NetConf, SUPPORTED_VERSIONS};
use crate::env::CniEnv;
use crate::error::{CniError, ErrorCode};
use crate::netlink::{self, NetlinkError, Ns};
use crate::result::{CniResult, Interface, IpConfig, Route};
use sluice_api::{EndpointRegistration, IpamAllocation, IpamRequest};
use std::net::Ipv4Addr;
use std::path::Path;

/// Name of the host-side veth: `lxc` + 11 hex digits of a hash of the
/// container id (15 chars, the kernel's limit). Derived, not stored, so DEL
/// finds it again even after the agent lost its state.
pub fn host_ifname(container_id: &str) -> String {
    format!(
        "lxc{}",
        &format!("{:016x}", fnv1a64(container_id.as_bytes()))[..11]
    )
}

/// FNV-1a: stable across Rust releases (unlike `DefaultHasher`) and needs no
/// extra crate. 44 bits of it make collisions on one node negligible.
fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub fn version_json(cni_version: &str) -> String {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

fn setup_err(what: &str, e: NetlinkError) -> CniError {
    CniError::new(ErrorCode::NetworkSetup, format!("cannot {what}: {e}"))
}

fn netns_exists(netns: &Path) -> Result<(), CniError> {
    if netns.exists() {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::NetnsMissing,
            format!(
                "network namespace {} (CNI_NETNS) does not exist",
                netns.display()
            ),
        ))
    }
}

/// Undo steps of a half-done ADD, run newest first.
enum Undo {
    ReleaseIp,
    DeleteLink(String),
    Deregister,
}

fn rollback(agent: &Agent, container_id: &str, steps: Vec<Undo>) -> Vec<String> {
    let mut problems = Vec::new();
    for step in steps.into_iter().rev() {
        let res = match &step {
            Undo::ReleaseIp => agent.release(container_id),
            Undo::Deregister => agent.deregister(container_id),
            Undo::DeleteLink(name) => netlink::delete_link(Ns::Current, name)
                .map(drop)
                .map_err(|e| setup_err("delete the veth", e)),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "rollback step failed");
            problems.push(e.msg);
        }
    }
    problems
}

pub fn add(env: &CniEnv, conf: &NetConf) -> Result<CniResult, CniError> {
    let container_id = env.require_container_id()?;
    let netns = env.require_netns()?;
    let ifname = env.require_ifname()?;
    // Before anything else: a missing netns is the runtime's problem and
    // must not cost an IP allocation.
    netns_exists(netns)?;
    let (namespace, pod) = env.pod_identity(container_id);
    let requested_ip = env.requested_ip()?;
    let agent = Agent::new(&conf.agent_socket)?;

    let alloc = agent.allocate(&IpamRequest {
        container_id: container_id.to_string(),
        namespace: namespace.clone(),
        pod: pod.clone(),
        ip: requested_ip,
    })?;
    let mut undo = vec![Undo::ReleaseIp];
    let res = wire_and_register(
        &agent,
        container_id,
        netns,
        ifname,
        &namespace,
        &pod,
        &alloc,
        &mut undo,
        &conf.cni_version,
    );
    res.map_err(|e| {
        let problems = rollback(&agent, container_id, undo);
        if problems.is_empty() {
            e
        } else {
            let details = format!(
                "{}; rollback also failed: {}",
                e.details,
                problems.join("; ")
            );
            e.with_details(details)
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn wire_and_register(
    agent: &Agent,
    container_id: &str,
    netns: &Path,
    ifname: &str,
    namespace: &str,
    pod: &str,
    alloc: &IpamAllocation,
    undo: &mut Vec<Undo>,
    cni_version: &str,
) -> Result<CniResult, CniError> {
    let host_if = host_ifname(container_id);
    // A leftover from an earlier, interrupted ADD of the same container: the
    // name is ours (derived from the id), so replacing it is safe.
    if netlink::delete_link(Ns::Current, &host_if).map_err(|e| setup_err("clean up", e))? {
        tracing::info!(%host_if, "removed a stale host veth");
    }
    netlink::create_veth(&host_if, ifname, netns)
        .map_err(|e| setup_err("create the veth pair", e))?;
    undo.push(Undo::DeleteLink(host_if.clone()));

    let host = netlink::link(Ns::Current, &host_if)
        .map_err(|e| setup_err("read the host veth", e))?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::NetworkSetup,
                format!("host veth {host_if} vanished right after creation"),
            )
        })?;
    let gw = alloc.gateway;
    let cidr = format!("{}/{}", alloc.ip, alloc.prefix_len);
    let pod_cmds = [
        "link set lo up".to_string(),
        format!("link set {ifname} up"),
        format!("addr add {cidr} dev {ifname}"),
        format!("route add {gw} dev {ifname} scope link"),
        format!("route add default via {gw} dev {ifname}"),
        // Permanent: the pod never ARPs for its gateway, the host side needs
        // no address and no proxy ARP.
        format!(
            "neigh replace {gw} lladdr {} dev {ifname} nud permanent",
            host.mac
        ),
    ];
    netlink::batch(Ns::Path(netns), &pod_cmds)
        .map_err(|e| setup_err("configure the pod interface", e))?;
    netlink::batch(
        Ns::Current,
        &[
            format!("link set {host_if} up"),
            format!("route replace {}/32 dev {host_if}", alloc.ip),
        ],
    )
    .map_err(|e| setup_err("configure the host veth", e))?;
    let pod_link = netlink::link(Ns::Path(netns), ifname)
        .map_err(|e| setup_err("read the pod interface", e))?
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::NetworkSetup,
                format!("{ifname} vanished from the pod"),
            )
        })?;

    let netns_str = netns.to_string_lossy().into_owned();
    // Registered last: once the agent attaches programs the endpoint is live.
    undo.push(Undo::Deregister);
    agent.register(
        container_id,
        &EndpointRegistration {
            namespace: namespace.to_string(),
            pod: pod.to_string(),
            ip: alloc.ip,
            host_ifname: host_if.clone(),
            ifname: ifname.to_string(),
            netns: netns_str.clone(),
        },
    )?;

    Ok(CniResult {
        cni_version: cni_version.to_string(),
        interfaces: vec![
            Interface {
                name: host_if,
                mac: host.mac,
                sandbox: None,
            },
            Interface {
                name: ifname.to_string(),
                mac: pod_link.mac,
                sandbox: Some(netns_str),
            },
        ],
        ips: vec![IpConfig {
            version: (cni_version == "0.4.0").then(|| "4".to_string()),
            address: cidr,
            gateway: Some(gw.to_string()),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(gw.to_string()),
        }],
        dns: serde_json::json!({}),
    })
}

/// DEL must succeed when things are already gone (the runtime retries it and
/// may call it after a failed ADD). When the agent is unreachable we still
/// remove the veth and succeed, logging to stderr: failing would block pod
/// removal until the agent is back. The agent must reconcile on start
/// (release IPs/endpoints whose host veth is gone).
pub fn del(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.require_container_id()?;
    let host_if = host_ifname(container_id);
    let agent = Agent::new(&conf.agent_socket)?;

    let agent_up = match agent.deregister(container_id) {
        Ok(()) => true,
        Err(e) if e.code == ErrorCode::TryAgainLater => {
            tracing::warn!(error = %e, "agent unreachable; removing the veth only");
            false
        }
        Err(e) => return Err(e),
    };
    // Deleting the host side removes the pod side too, whether or not the
    // pod's netns still exists.
    netlink::delete_link(Ns::Current, &host_if).map_err(|e| setup_err("delete the veth", e))?;
    if agent_up {
        agent.release(container_id)?;
    }
    Ok(())
}

pub fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let container_id = env.require_container_id()?;
    let netns = env.require_netns()?;
    let ifname = env.require_ifname()?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "CHECK needs \"prevResult\" in the network configuration",
        )
    })?;
    let ip = prev.first_ip().ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "\"prevResult\" has no IPv4 address to check",
        )
    })?;
    netns_exists(netns)?;
    let failed = |msg: String| CniError::new(ErrorCode::CheckFailed, msg);
    let host_if = host_ifname(container_id);

    let host = netlink::link(Ns::Current, &host_if)
        .map_err(|e| setup_err("read the host veth", e))?
        .ok_or_else(|| failed(format!("host veth {host_if} is missing")))?;
    if !host.up {
        return Err(failed(format!("host veth {host_if} is down")));
    }
    let pod = netlink::link(Ns::Path(netns), ifname)
        .map_err(|e| setup_err("read the pod interface", e))?
        .ok_or_else(|| failed(format!("{ifname} is missing in {}", netns.display())))?;
    if !pod.up {
        return Err(failed(format!("{ifname} in the pod is down")));
    }
    if !pod.addrs.iter().any(|a| a.starts_with(&format!("{ip}/"))) {
        return Err(failed(format!("{ifname} in the pod lacks address {ip}")));
    }
    let pod_routes =
        netlink::routes(Ns::Path(netns)).map_err(|e| setup_err("read pod routes", e))?;
    let gw = prev
        .ips
        .first()
        .and_then(|c| c.gateway.clone())
        .unwrap_or_else(|| "169.254.1.1".into());
    if !has_route(&pod_routes, "default", Some(&gw), ifname) {
        return Err(failed(format!(
            "the pod has no default route via {gw} dev {ifname}"
        )));
    }
    let node_routes = netlink::routes(Ns::Current).map_err(|e| setup_err("read node routes", e))?;
    if !has_route(&node_routes, &ip.to_string(), None, &host_if) {
        return Err(failed(format!(
            "the node has no route {ip}/32 dev {host_if}"
        )));
    }
    Ok(())
}

fn has_route(routes: &[serde_json::Value], dst: &str, gw: Option<&str>, dev: &str) -> bool {
    routes
        .iter()
        .any(|r| r["dst"] == dst && r["dev"] == dev && gw.is_none_or(|g| r["gateway"] == g))
}

pub fn status(conf: &NetConf) -> Result<(), CniError> {
    let agent = Agent::new(&conf.agent_socket)?;
    agent.status().map(drop).map_err(|e| {
        CniError::new(
            ErrorCode::PluginNotAvailable,
            format!("sluice-cni cannot serve ADD: {}", e.msg),
        )
        .with_details(e.details)
    })
}

/// Parses the ip from "a.b.c.d/n" (exposed for the sandbox and tests).
pub fn parse_cidr_ip(s: &str) -> Option<Ipv4Addr> {
    s.split('/').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifname_is_stable_and_short() {
        let a = host_ifname("0123456789abcdef0123456789abcdef");
        assert_eq!(a, host_ifname("0123456789abcdef0123456789abcdef"));
        assert_ne!(a, host_ifname("another"));
        assert_eq!(a.len(), 14);
        assert!(a.starts_with("lxc"));
        assert!(a.len() <= crate::env::MAX_IFNAME_LEN);
    }

    #[test]
    fn version_lists_all() {
        let v: serde_json::Value = serde_json::from_str(&version_json("1.1.0")).expect("json");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["supportedVersions"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn route_matching() {
        let routes: Vec<serde_json::Value> = serde_json::from_str(
            r#"[{"dst":"default","gateway":"169.254.1.1","dev":"eth0"},{"dst":"10.244.1.5","dev":"lxcabc","scope":"link"}]"#,
        )
        .expect("json");
        assert!(has_route(&routes, "default", Some("169.254.1.1"), "eth0"));
        assert!(!has_route(&routes, "default", Some("1.1.1.1"), "eth0"));
        assert!(has_route(&routes, "10.244.1.5", None, "lxcabc"));
    }
}
