//! Field validators shared by NetworkPolicy and CiliumNetworkPolicy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::Ipv4Net;

use super::model::{CidrBlock, LabelSelector, SelectorOperator, SelectorRequirement};
use super::raw::{RawCidrBlock, RawSelector};
use crate::error::ObjectError;

pub(super) type Result<T> = std::result::Result<T, ObjectError>;

/// Validates a label selector; `key` checks (and may rewrite) every label
/// key, so Cilium can strip its `k8s:` source prefix.
pub(super) fn selector(
    path: &str,
    raw: RawSelector,
    key: &dyn Fn(&str, &str) -> Result<String>,
) -> Result<LabelSelector> {
    let mut match_labels = BTreeMap::new();
    for (k, v) in raw.match_labels.unwrap_or_default() {
        let k = key(&format!("{path}.matchLabels[{k}]"), &k)?;
        match_labels.insert(k, v);
    }
    let mut match_expressions = Vec::new();
    for (i, r) in raw
        .match_expressions
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let base = format!("{path}.matchExpressions[{i}]");
        let k = match r.key {
            Some(k) if !k.is_empty() => key(&format!("{base}.key"), &k)?,
            _ => return Err(ObjectError::invalid(format!("{base}.key"), "is required")),
        };
        let op_path = format!("{base}.operator");
        let operator = match r.operator.as_deref() {
            None => return Err(ObjectError::invalid(op_path, "is required")),
            Some(s) => SelectorOperator::parse(s).ok_or_else(|| {
                ObjectError::invalid(
                    op_path,
                    format!("{s:?} is not one of In, NotIn, Exists, DoesNotExist"),
                )
            })?,
        };
        let values = r.values.unwrap_or_default();
        let values_path = format!("{base}.values");
        match operator {
            SelectorOperator::In | SelectorOperator::NotIn if values.is_empty() => {
                return Err(ObjectError::invalid(
                    values_path,
                    "must be non-empty for In and NotIn",
                ))
            }
            SelectorOperator::Exists | SelectorOperator::DoesNotExist if !values.is_empty() => {
                return Err(ObjectError::invalid(
                    values_path,
                    "must be empty for Exists and DoesNotExist",
                ))
            }
            _ => {}
        }
        match_expressions.push(SelectorRequirement {
            key: k,
            operator,
            values,
        });
    }
    Ok(LabelSelector {
        match_labels,
        match_expressions,
    })
}

/// Kubernetes label keys are used as they are.
pub(super) fn plain_key(_path: &str, key: &str) -> Result<String> {
    Ok(key.to_string())
}

/// Parses an IPv4 CIDR. Host bits are allowed and cleared: upstream tests
/// write `10.244.1.7/4` and mean the network that contains that address.
/// `bare_ip` accepts a plain address as a /32 (Cilium does, Kubernetes not).
pub(super) fn cidr(path: &str, s: &str, bare_ip: bool) -> Result<Ipv4Net> {
    let bad = || ObjectError::invalid(path, format!("{s:?} is not an IPv4 CIDR"));
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip = match addr.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip,
        Ok(IpAddr::V6(_)) => {
            return Err(ObjectError::invalid(
                path,
                format!("{s}: IPv6 not supported yet"),
            ))
        }
        Err(_) => return Err(bad()),
    };
    let len = match len {
        Some(l) => l.parse::<u8>().map_err(|_| bad())?,
        None if bare_ip => 32,
        None => {
            return Err(ObjectError::invalid(
                path,
                format!("{s:?} is not a CIDR (expected address/prefix-length)"),
            ))
        }
    };
    Ipv4Net::new(ip, len).map(|n| n.trunc()).map_err(|_| bad())
}

/// `cidr` + `except`; every hole must lie inside the block.
pub(super) fn cidr_block(path: &str, raw: RawCidrBlock, bare_ip: bool) -> Result<CidrBlock> {
    let cidr_path = format!("{path}.cidr");
    let cidr = match raw.cidr.as_deref() {
        Some(s) if !s.is_empty() => self::cidr(&cidr_path, s, bare_ip)?,
        _ => return Err(ObjectError::invalid(cidr_path, "is required")),
    };
    let mut except = Vec::new();
    for (i, s) in raw.except.unwrap_or_default().iter().enumerate() {
        let p = format!("{path}.except[{i}]");
        let e = self::cidr(&p, s, bare_ip)?;
        if !cidr.contains(&e) {
            return Err(ObjectError::invalid(p, format!("{e} is not inside {cidr}")));
        }
        except.push(e);
    }
    Ok(CidrBlock { cidr, except })
}

/// Kubernetes IANA_SVC_NAME: 1-15 characters of `a-z`, `0-9` and `-`, at
/// least one letter, no leading, trailing or doubled `-`.
pub(super) fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

pub(super) fn port_name_error(path: &str, s: &str) -> ObjectError {
    ObjectError::invalid(
        path,
        format!(
            "{s:?} is not a valid port name (1-15 lowercase letters, digits and '-', \
             with at least one letter)"
        ),
    )
}

/// Validates `endPort` against an already validated start port.
pub(super) fn end_port(path: &str, start: u16, end: i64) -> Result<u16> {
    let end16 = crate::validate::port(path, Some(end))?;
    if end16 < start {
        return Err(ObjectError::invalid(
            path,
            format!("{end16} is less than port {start}"),
        ));
    }
    Ok(end16)
}
