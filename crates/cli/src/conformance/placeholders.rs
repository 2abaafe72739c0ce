//! Placeholders in the cases' policy manifests, filled in with the pod IPs
//! of the run (tests/cases/netpol/README.md, "Placeholders"):
//! `{IP:x/b}` the pod's IP, `{HOSTLEN}` 32, `{LARGE4:x/b}` the /4 network
//! holding the pod's IP with host bits zeroed. `{IP:x/a}/4` stays literal
//! (host bits set), as the 9-pod upstream version writes it.

use super::matrix::{PodId, N};
use ipnet::Ipv4Net;
use serde_norway::Value;
use std::net::Ipv4Addr;

/// A copy of `value` with every placeholder in its strings replaced.
pub fn substitute(value: &Value, ips: &[Ipv4Addr; N]) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => Value::String(substitute_str(s, ips)?),
        Value::Sequence(seq) => Value::Sequence(
            seq.iter()
                .map(|v| substitute(v, ips))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(map) => {
            let mut out = map.clone();
            for v in out.values_mut() {
                *v = substitute(v, ips)?;
            }
            Value::Mapping(out)
        }
        Value::Tagged(t) => {
            let mut t = t.clone();
            t.value = substitute(&t.value, ips)?;
            Value::Tagged(t)
        }
        other => other.clone(),
    })
}

/// Checks that every placeholder is known and names a pod of the model,
/// so a bad case file fails when it is loaded, not in the sandbox.
pub fn check(value: &Value) -> Result<(), String> {
    substitute(value, &[Ipv4Addr::new(10, 0, 0, 1); N]).map(drop)
}

fn substitute_str(s: &str, ips: &[Ipv4Addr; N]) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {s:?}"))?;
        out.push_str(&expand(&after[..close], ips).map_err(|e| format!("{e} in {s:?}"))?);
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand(token: &str, ips: &[Ipv4Addr; N]) -> Result<String, String> {
    let pod = |p: &str| {
        PodId::parse(p)
            .map(|p| ips[p.index()])
            .ok_or_else(|| format!("{{{token}}} names no pod of the model"))
    };
    if token == "HOSTLEN" {
        return Ok("32".into());
    }
    if let Some(p) = token.strip_prefix("IP:") {
        return Ok(pod(p)?.to_string());
    }
    if let Some(p) = token.strip_prefix("LARGE4:") {
        let net = Ipv4Net::new(pod(p)?, 4).map_err(|e| e.to_string())?;
        return Ok(net.trunc().to_string());
    }
    Err(format!("unknown placeholder {{{token}}}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ips() -> [Ipv4Addr; N] {
        let mut ips = [Ipv4Addr::UNSPECIFIED; N];
        for (i, ip) in ips.iter_mut().enumerate() {
            *ip = Ipv4Addr::new(10, 244, 7, 2 + i as u8);
        }
        ips
    }

    #[test]
    fn fills_in_ips_and_prefixes() {
        let ips = ips();
        assert_eq!(substitute_str("{IP:x/a}/4", &ips).unwrap(), "10.244.7.2/4");
        assert_eq!(
            substitute_str("{IP:x/b}/{HOSTLEN}", &ips).unwrap(),
            "10.244.7.3/32"
        );
        assert_eq!(substitute_str("{LARGE4:x/b}", &ips).unwrap(), "0.0.0.0/4");
        assert_eq!(substitute_str("no braces", &ips).unwrap(), "no braces");
    }

    #[test]
    fn rejects_unknown_or_broken_placeholders() {
        let ips = ips();
        assert!(substitute_str("{IP:w/a}", &ips).is_err_and(|e| e.contains("no pod")));
        assert!(substitute_str("{IPV6:x/a}", &ips).is_err_and(|e| e.contains("unknown")));
        assert!(substitute_str("{IP:x/a", &ips).is_err_and(|e| e.contains("unclosed")));
    }

    #[test]
    fn walks_whole_manifests() {
        let doc: Value = serde_norway::from_str(
            "spec:\n  egress:\n  - to:\n    - ipBlock:\n        cidr: '{IP:x/a}/4'\n        except: ['{IP:x/b}/{HOSTLEN}']\n",
        )
        .unwrap();
        let out = serde_norway::to_string(&substitute(&doc, &ips()).unwrap()).unwrap();
        assert!(out.contains("cidr: 10.244.7.2/4"), "{out}");
        assert!(out.contains("- 10.244.7.3/32"), "{out}");
        assert!(check(&doc).is_ok());
    }
}
