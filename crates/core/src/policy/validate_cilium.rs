//! Raw `cilium.io/v2` CiliumNetworkPolicy → validated model.

use super::fields::{cidr, cidr_block, end_port, is_port_name, port_name_error, selector, Result};
use super::identity::{NAMESPACE_LABELS_KEY_PREFIX, POD_NAMESPACE_KEY};
use super::model::{
    CidrBlock, CiliumNetworkPolicy, CiliumRule, Entity, LabelSelector, PolicyPort, PortMatch,
};
use super::raw::{RawCiliumNetworkPolicy, RawCiliumRule, RawPortProtocol, RawSelector};
use crate::error::ObjectError;
use crate::model::Protocol;
use crate::raw::IntOrString;
use crate::validate::meta;

pub(crate) fn cilium_network_policy(raw: RawCiliumNetworkPolicy) -> Result<CiliumNetworkPolicy> {
    let meta = meta(raw.metadata, true)?;
    if raw.specs.is_some() {
        return Err(ObjectError::invalid(
            "specs",
            "several rule sets in one policy are not supported yet; \
             use one CiliumNetworkPolicy per rule set",
        ));
    }
    let spec = raw
        .spec
        .ok_or_else(|| ObjectError::invalid("spec", "is required"))?;
    let ns = meta.namespace.clone();
    let mut endpoint_selector = match spec.endpoint_selector {
        Some(s) => selector("spec.endpointSelector", s, &cilium_key)?,
        None => return Err(ObjectError::invalid("spec.endpointSelector", "is required")),
    };
    // As in Cilium: a namespaced policy only ever applies to its own
    // namespace, whatever namespace the selector names.
    endpoint_selector
        .match_labels
        .insert(POD_NAMESPACE_KEY.to_string(), ns.clone());
    Ok(CiliumNetworkPolicy {
        ingress: rules("ingress", spec.ingress, &ns)?,
        ingress_deny: rules("ingressDeny", spec.ingress_deny, &ns)?,
        egress: rules("egress", spec.egress, &ns)?,
        egress_deny: rules("egressDeny", spec.egress_deny, &ns)?,
        meta,
        endpoint_selector,
    })
}

fn rules<R: Into<RawCiliumRule>>(
    field: &str,
    raw: Option<Vec<R>>,
    ns: &str,
) -> Result<Vec<CiliumRule>> {
    raw.unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, r)| rule(&format!("spec.{field}[{i}]"), r.into(), ns))
        .collect()
}

/// Cilium label keys carry a source (`k8s:app`); identities here only have
/// Kubernetes-sourced labels, so `k8s:` and `any:` are dropped and other
/// sources are refused rather than silently never matching.
fn cilium_key(path: &str, key: &str) -> Result<String> {
    match key.split_once(':') {
        None => Ok(key.to_string()),
        Some(("k8s" | "any", rest)) if !rest.is_empty() => Ok(rest.to_string()),
        Some((source, _)) => Err(ObjectError::invalid(
            path,
            format!(
                "label source {source:?} is not supported (only k8s: and any:); \
                 use fromEntities/toEntities for reserved identities"
            ),
        )),
    }
}

/// A peer selector, scoped like Cilium scopes it: to the policy's namespace
/// unless it matches on the namespace or on namespace labels itself.
fn endpoint_selector(path: &str, raw: RawSelector, ns: &str) -> Result<LabelSelector> {
    let mut sel = selector(path, raw, &cilium_key)?;
    if !sel.has_key(POD_NAMESPACE_KEY) && !sel.has_key_prefix(NAMESPACE_LABELS_KEY_PREFIX) {
        sel.match_labels
            .insert(POD_NAMESPACE_KEY.to_string(), ns.to_string());
    }
    Ok(sel)
}

fn rule(path: &str, raw: RawCiliumRule, ns: &str) -> Result<CiliumRule> {
    let names = raw.names;
    let mut out = CiliumRule::default();
    for (j, s) in raw.endpoints.unwrap_or_default().into_iter().enumerate() {
        let p = format!("{path}.{}[{j}]", names.endpoints);
        out.endpoints.push(endpoint_selector(&p, s, ns)?);
    }
    for (j, s) in raw.cidr.unwrap_or_default().iter().enumerate() {
        let p = format!("{path}.{}[{j}]", names.cidr);
        out.cidrs.push(CidrBlock {
            cidr: cidr(&p, s, true)?,
            except: Vec::new(),
        });
    }
    for (j, b) in raw.cidr_set.unwrap_or_default().into_iter().enumerate() {
        let p = format!("{path}.{}[{j}]", names.cidr_set);
        out.cidrs.push(cidr_block(&p, b, true)?);
    }
    for (j, e) in raw.entities.unwrap_or_default().iter().enumerate() {
        let entity = Entity::parse(e).ok_or_else(|| {
            let known: Vec<&str> = Entity::ALL.iter().map(|e| e.as_str()).collect();
            ObjectError::invalid(
                format!("{path}.{}[{j}]", names.entities),
                format!("{e:?} is not one of {}", known.join(", ")),
            )
        })?;
        out.entities.push(entity);
    }
    for (j, pr) in raw.to_ports.unwrap_or_default().into_iter().enumerate() {
        let ports = pr.ports.unwrap_or_default();
        if ports.is_empty() {
            out.ports.push(PolicyPort {
                protocol: None,
                port: PortMatch::All,
            });
        }
        for (k, pp) in ports.into_iter().enumerate() {
            out.ports.push(port_protocol(
                &format!("{path}.toPorts[{j}].ports[{k}]"),
                pp,
            )?);
        }
    }
    Ok(out)
}

fn port_protocol(path: &str, raw: RawPortProtocol) -> Result<PolicyPort> {
    // Cilium defaults the protocol to ANY, unlike Kubernetes (TCP).
    let protocol = match raw.protocol.as_deref() {
        None | Some("ANY") => None,
        Some(s) => Some(Protocol::parse_k8s(s).ok_or_else(|| {
            ObjectError::invalid(
                format!("{path}.protocol"),
                format!("{s:?} is not one of TCP, UDP, SCTP, ANY"),
            )
        })?),
    };
    let port_path = format!("{path}.port");
    let end_path = format!("{path}.endPort");
    let number = match raw.port {
        None => 0,
        Some(IntOrString::Int(v)) => v,
        Some(IntOrString::Str(s)) if s.is_empty() => 0,
        Some(IntOrString::Str(s)) => match s.parse::<i64>() {
            Ok(v) => v,
            Err(_) => {
                if raw.end_port.is_some() {
                    return Err(ObjectError::invalid(end_path, "requires a numeric port"));
                }
                if !is_port_name(&s) {
                    return Err(port_name_error(&port_path, &s));
                }
                return Ok(PolicyPort {
                    protocol,
                    port: PortMatch::Named(s),
                });
            }
        },
    };
    // Port 0 (or none) is Cilium's wildcard: every port of the protocol.
    let port = match (number, raw.end_port) {
        (0, None) => PortMatch::All,
        (0, Some(_)) => return Err(ObjectError::invalid(end_path, "requires a non-zero port")),
        (v, end) => {
            let start = crate::validate::port(&port_path, Some(v))?;
            let end = match end {
                Some(e) => end_port(&end_path, start, e)?,
                None => start,
            };
            PortMatch::Range { start, end }
        }
    };
    Ok(PolicyPort { protocol, port })
}
