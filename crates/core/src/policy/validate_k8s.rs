//! Raw `networking.k8s.io/v1` NetworkPolicy → validated model.

use super::fields::{
    cidr_block, end_port, is_port_name, plain_key, port_name_error, selector, Result,
};
use super::model::{
    NetworkPolicy, NetworkPolicyPeer, NetworkPolicyRule, PolicyPort, PolicyType, PortMatch,
};
use super::raw::{RawNetworkPolicy, RawPeer, RawPort};
use crate::error::ObjectError;
use crate::raw::IntOrString;
use crate::validate::{meta, port as port_number, protocol};

pub(crate) fn network_policy(raw: RawNetworkPolicy) -> Result<NetworkPolicy> {
    let meta = meta(raw.metadata, true)?;
    let spec = raw.spec;
    let pod_selector = match spec.pod_selector {
        Some(s) => selector("spec.podSelector", s, &plain_key)?,
        None => Default::default(),
    };
    let mut policy_types = Vec::new();
    for (i, t) in spec.policy_types.unwrap_or_default().iter().enumerate() {
        policy_types.push(match t.as_str() {
            "Ingress" => PolicyType::Ingress,
            "Egress" => PolicyType::Egress,
            other => {
                return Err(ObjectError::invalid(
                    format!("spec.policyTypes[{i}]"),
                    format!("{other:?} is not one of Ingress, Egress"),
                ))
            }
        });
    }
    let raw_ingress = spec.ingress.unwrap_or_default();
    let raw_egress = spec.egress.unwrap_or_default();
    if policy_types.is_empty() {
        // The API server's defaulting: Ingress always, Egress only when the
        // policy has egress rules (`egress: []` does not count).
        policy_types.push(PolicyType::Ingress);
        if !raw_egress.is_empty() {
            policy_types.push(PolicyType::Egress);
        }
    }
    policy_types.sort();
    policy_types.dedup();
    let ingress = raw_ingress
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule(&format!("spec.ingress[{i}]"), "from", r.from, r.ports))
        .collect::<Result<Vec<_>>>()?;
    let egress = raw_egress
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule(&format!("spec.egress[{i}]"), "to", r.to, r.ports))
        .collect::<Result<Vec<_>>>()?;
    Ok(NetworkPolicy {
        meta,
        pod_selector,
        policy_types,
        ingress,
        egress,
    })
}

fn rule(
    path: &str,
    peers_field: &str,
    peers: Option<Vec<RawPeer>>,
    ports: Option<Vec<RawPort>>,
) -> Result<NetworkPolicyRule> {
    let peers = peers
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, p)| peer(&format!("{path}.{peers_field}[{j}]"), p))
        .collect::<Result<Vec<_>>>()?;
    let ports = ports
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(j, p)| policy_port(&format!("{path}.ports[{j}]"), p))
        .collect::<Result<Vec<_>>>()?;
    Ok(NetworkPolicyRule { peers, ports })
}

fn peer(path: &str, raw: RawPeer) -> Result<NetworkPolicyPeer> {
    match (raw.pod_selector, raw.namespace_selector, raw.ip_block) {
        (None, None, None) => Err(ObjectError::invalid(
            path,
            "must specify one of podSelector, namespaceSelector or ipBlock",
        )),
        (None, None, Some(block)) => Ok(NetworkPolicyPeer::IpBlock(cidr_block(
            &format!("{path}.ipBlock"),
            block,
            false,
        )?)),
        (_, _, Some(_)) => Err(ObjectError::invalid(
            format!("{path}.ipBlock"),
            "may not be combined with podSelector or namespaceSelector",
        )),
        (pods, namespaces, None) => Ok(NetworkPolicyPeer::Selector {
            pod_selector: pods
                .map(|s| selector(&format!("{path}.podSelector"), s, &plain_key))
                .transpose()?,
            namespace_selector: namespaces
                .map(|s| selector(&format!("{path}.namespaceSelector"), s, &plain_key))
                .transpose()?,
        }),
    }
}

fn policy_port(path: &str, raw: RawPort) -> Result<PolicyPort> {
    let protocol = protocol(&format!("{path}.protocol"), raw.protocol.as_deref())?;
    let port_path = format!("{path}.port");
    let end_path = format!("{path}.endPort");
    let number = match raw.port {
        None => None,
        Some(IntOrString::Int(v)) => Some(port_number(&port_path, Some(v))?),
        // Numeric strings are numbers, as for Service targetPort.
        Some(IntOrString::Str(s)) => match s.parse::<i64>() {
            Ok(v) => Some(port_number(&port_path, Some(v))?),
            Err(_) => {
                if raw.end_port.is_some() {
                    return Err(ObjectError::invalid(end_path, "requires a numeric port"));
                }
                if !is_port_name(&s) {
                    return Err(port_name_error(&port_path, &s));
                }
                return Ok(PolicyPort {
                    protocol: Some(protocol),
                    port: PortMatch::Named(s),
                });
            }
        },
    };
    let port = match (number, raw.end_port) {
        (None, None) => PortMatch::All,
        (None, Some(_)) => return Err(ObjectError::invalid(end_path, "requires a numeric port")),
        (Some(start), None) => PortMatch::Range { start, end: start },
        (Some(start), Some(end)) => PortMatch::Range {
            start,
            end: end_port(&end_path, start, end)?,
        },
    };
    Ok(PolicyPort {
        protocol: Some(protocol),
        port,
    })
}
