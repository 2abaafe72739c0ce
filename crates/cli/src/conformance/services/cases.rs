//! services.yaml as data: the conventions (the unit-test world's
//! addresses) and each behaviour's setup, flows and expectations, read
//! from the file and never from tables in the code. Prose the runner
//! cannot interpret is reported, never guessed.

use super::super::cases::Protocol;
use anyhow::{anyhow, bail, Context, Result};
use serde_norway::Value;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

/// `conventions.unit_test_world`, the addresses every unit-derived
/// behaviour is written against.
#[derive(Debug, Clone)]
pub struct Conventions {
    pub node_name: String,
    /// The node's addresses, primary first.
    pub node_ips: Vec<Ipv4Addr>,
    pub primary_ip: Ipv4Addr,
    pub pod_cidr: ipnet::Ipv4Net,
    pub service_cidr: ipnet::Ipv4Net,
    pub external_client: Ipv4Addr,
    pub blocked_client: Ipv4Addr,
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub id: String,
    pub title: String,
    pub raw: Value,
}

pub struct File {
    pub conventions: Conventions,
    pub behaviours: Vec<Behaviour>,
}

pub fn load(path: &Path) -> Result<File> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<File> {
    let doc: Value = serde_norway::from_str(text).context("not YAML")?;
    let w = doc
        .get("conventions")
        .and_then(|c| c.get("unit_test_world"))
        .ok_or_else(|| anyhow!("no conventions.unit_test_world"))?;
    let node = w
        .get("this_node")
        .ok_or_else(|| anyhow!("no unit_test_world.this_node"))?;
    let node_ips: Vec<Ipv4Addr> = seq(node.get("ips"))
        .iter()
        .map(|v| ip(v).context("this_node.ips"))
        .collect::<Result<_>>()?;
    let conventions = Conventions {
        node_name: text_of(node.get("name")).context("this_node.name")?,
        primary_ip: ip(node.get("primary_ip").unwrap_or(&Value::Null))
            .context("this_node.primary_ip")?,
        node_ips,
        pod_cidr: text_of(w.get("pod_cidr_for_local_traffic_detection"))?
            .parse()
            .context("pod_cidr_for_local_traffic_detection")?,
        service_cidr: text_of(w.get("service_cidr"))?
            .parse()
            .context("service_cidr")?,
        external_client: ip(w.get("external_client").unwrap_or(&Value::Null))
            .context("external_client")?,
        blocked_client: ip(w
            .get("external_client_blocked_by_source_ranges")
            .unwrap_or(&Value::Null))
        .context("external_client_blocked_by_source_ranges")?,
    };
    let behaviours = seq(doc.get("behaviours"))
        .iter()
        .map(|b| {
            Ok(Behaviour {
                id: text_of(b.get("id")).context("a behaviour without id")?,
                title: text_of(b.get("title")).unwrap_or_default(),
                raw: b.clone(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(File {
        conventions,
        behaviours,
    })
}

pub fn seq(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::Sequence(s)) => s,
        _ => &[],
    }
}

pub fn text_of(v: Option<&Value>) -> Result<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        other => bail!("expected text, found {other:?}"),
    }
}

pub fn ip(v: &Value) -> Result<Ipv4Addr> {
    let s = text_of(Some(v))?;
    parse_ip(&s).ok_or_else(|| anyhow!("{s:?} is not an IPv4 address"))
}

/// Tolerant like kube-proxy (svc-043): `192.168.099.022` is decimal.
pub fn parse_ip(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u8> = s
        .trim()
        .split('.')
        .map(|p| p.parse::<u8>().ok())
        .collect::<Option<_>>()?;
    match parts[..] {
        [a, b, c, d] => Some(Ipv4Addr::new(a, b, c, d)),
        _ => None,
    }
}

pub fn parse_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.trim().rsplit_once(':')?;
    Some(SocketAddrV4::new(parse_ip(ip)?, port.parse().ok()?))
}

/// Where a flow comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A pod on this node with this address.
    Pod(Ipv4Addr),
    /// A process on this node, bound to this node address.
    Node(Ipv4Addr),
    /// A client outside the cluster with this address.
    External(Ipv4Addr),
    /// A source the sandbox cannot produce; the reason.
    Unsupported(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Pod(ip) => write!(f, "pod {ip}"),
            Source::Node(ip) => write!(f, "node {ip}"),
            Source::External(ip) => write!(f, "external {ip}"),
            Source::Unsupported(why) => write!(f, "({why})"),
        }
    }
}

impl Source {
    pub fn ip(&self) -> Option<Ipv4Addr> {
        match self {
            Source::Pod(ip) | Source::Node(ip) | Source::External(ip) => Some(*ip),
            Source::Unsupported(_) => None,
        }
    }
}

/// The client pod the file means by a bare `pod`: the one it names in
/// `action.sources` (svc-010) or, lacking that, the unit tests' usual pod.
pub const DEFAULT_POD: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Reads `pod 10.0.0.2`, `external 203.0.113.2`, `node 192.168.0.2`,
/// `pod 10.180.0.1 (the backend itself)`, a bare role resolved through
/// `sources` (svc-010), or a bare address (a pod's, a node's or an
/// external client's by the conventions; anything else cannot be made).
pub fn source(from: &str, sources: &BTreeMap<String, Ipv4Addr>, c: &Conventions) -> Source {
    let mut words = from.split_whitespace();
    let role = words.next().unwrap_or("");
    let addr = words.next().and_then(parse_ip);
    let given = addr.or_else(|| sources.get(role).copied());
    match role {
        "pod" => Source::Pod(given.unwrap_or(DEFAULT_POD)),
        "node" => Source::Node(given.unwrap_or(c.primary_ip)),
        "external" => Source::External(given.unwrap_or(c.external_client)),
        other => match parse_ip(other) {
            Some(ip) if c.node_ips.contains(&ip) => Source::Node(ip),
            Some(ip) if ip == c.external_client || ip == c.blocked_client => Source::External(ip),
            Some(ip) if c.pod_cidr.contains(&ip) => Source::Pod(ip),
            Some(ip) => Source::Unsupported(format!(
                "source {ip} is neither a pod, a node address nor an external client: \
                 the sandbox cannot send from it (upstream fakes the packet)"
            )),
            None => Source::Unsupported(format!("source {from:?} is not an address or role")),
        },
    }
}

#[derive(Debug, Clone)]
pub struct Flow {
    pub name: String,
    pub from: String,
    pub source: Source,
    pub to: SocketAddrV4,
    pub protocol: Protocol,
}

pub fn protocol(v: Option<&Value>) -> Result<Protocol> {
    match v {
        None => Ok(Protocol::Tcp),
        Some(v) => match text_of(Some(v))?.to_ascii_uppercase().as_str() {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => bail!("protocol {other:?}"),
        },
    }
}

/// `action.flows` (or, for svc-010, the expectation rows that carry
/// their own `from`/`to`).
pub fn flows(
    rows: &[Value],
    sources: &BTreeMap<String, Ipv4Addr>,
    c: &Conventions,
) -> Result<Vec<Flow>> {
    rows.iter()
        .map(|f| {
            let name = text_of(f.get("name").or_else(|| f.get("flow"))).context("flow name")?;
            let from = text_of(f.get("from")).with_context(|| format!("flow {name:?}: from"))?;
            let to_s = text_of(f.get("to")).with_context(|| format!("flow {name:?}: to"))?;
            let to = parse_addr(&to_s)
                .ok_or_else(|| anyhow!("flow {name:?}: destination {to_s:?} is not ip:port"))?;
            Ok(Flow {
                source: source(&from, sources, c),
                protocol: protocol(f.get("protocol")).with_context(|| format!("flow {name:?}"))?,
                name,
                from,
                to,
            })
        })
        .collect()
}

/// `action.sources` of svc-010: role → address.
pub fn sources(action: Option<&Value>) -> BTreeMap<String, Ipv4Addr> {
    let mut out = BTreeMap::new();
    if let Some(Value::Mapping(m)) = action.and_then(|a| a.get("sources")) {
        for (k, v) in m {
            if let (Ok(k), Ok(v)) = (text_of(Some(k)), ip(v)) {
                out.insert(k, v);
            }
        }
    }
    out
}

/// What a flow must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Any of these backends answers.
    Backends(Vec<SocketAddrV4>),
    /// Actively refused.
    Reject,
    /// Silently discarded: the client times out.
    Drop,
    /// Nothing installed: normal routing (no backend answers).
    None,
    /// A service rule exists for the address: a backend answers, or the
    /// agent's flow events show the datapath forwarding it to one.
    Captured(Vec<SocketAddrV4>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub output: Output,
    pub masq: Option<bool>,
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.output {
            Output::Backends(b) => write!(
                f,
                "{}",
                b.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("|")
            )?,
            Output::Reject => write!(f, "REJECT")?,
            Output::Drop => write!(f, "DROP")?,
            Output::None => write!(f, "NONE")?,
            Output::Captured(b) => write!(
                f,
                "captured (to {})",
                b.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("|")
            )?,
        }
        match self.masq {
            Some(true) => write!(f, " masq"),
            Some(false) => write!(f, " no-masq"),
            None => Ok(()),
        }
    }
}

pub fn expect_of(row: &Value) -> Result<Expect> {
    let output = match row.get("output") {
        Some(Value::Sequence(list)) => Output::Backends(
            list.iter()
                .map(|v| {
                    let s = text_of(Some(v))?;
                    parse_addr(&s).ok_or_else(|| anyhow!("backend {s:?} is not ip:port"))
                })
                .collect::<Result<_>>()?,
        ),
        Some(Value::String(s)) => match s.as_str() {
            "REJECT" => Output::Reject,
            "DROP" => Output::Drop,
            "NONE" => Output::None,
            other => bail!("output {other:?} is prose, not REJECT/DROP/NONE or a backend list"),
        },
        other => bail!("no usable output ({other:?})"),
    };
    let masq = match row.get("masq") {
        Some(Value::Bool(b)) => Some(*b),
        None => None,
        Some(other) => bail!("masq {other:?} is not a boolean"),
    };
    Ok(Expect { output, masq })
}

/// The expectation rows for `flows`: by exact name, else a wildcard row
/// (`*`, or `(all … other flows)`) for every flow without its own row.
pub fn match_rows<'a>(rows: &'a [Value], flow: &str) -> Option<&'a Value> {
    let named = |r: &&Value| text_of(r.get("flow")).ok().as_deref() == Some(flow);
    rows.iter().find(named).or_else(|| {
        rows.iter().find(|r| {
            text_of(r.get("flow")).is_ok_and(|f| {
                let f = f.trim();
                f == "*" || (f.starts_with("(all") && f.contains("other flows"))
            })
        })
    })
}

/// An endpoint written `10.0.1.3 !R S T @another-node` (svc-025/026) or
/// `10.0.1.1@test-node` (svc-020).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSpec {
    pub ip: Ipv4Addr,
    pub node: Option<String>,
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
}

pub fn endpoint_spec(s: &str) -> Option<EndpointSpec> {
    let (head, node) = match s.split_once('@') {
        Some((h, n)) => (h, Some(n.trim().to_string())),
        None => (s, None),
    };
    let mut words = head.split_whitespace();
    let ip = parse_ip(words.next()?)?;
    let mut e = EndpointSpec {
        ip,
        node,
        ready: None,
        serving: None,
        terminating: None,
    };
    for w in words {
        let (neg, flag) = match w.strip_prefix('!') {
            Some(f) => (true, f),
            None => (false, w),
        };
        let slot = match flag {
            "R" => &mut e.ready,
            "S" => &mut e.serving,
            "T" => &mut e.terminating,
            _ => return None,
        };
        *slot = Some(!neg);
    }
    Some(e)
}

/// Every `IP@node` in a prose case title (svc-020).
pub fn endpoints_in_prose(s: &str) -> Vec<EndpointSpec> {
    s.split([',', ';', '(', ')'])
        .filter_map(|part| {
            let part = part.trim();
            let token = part.split_whitespace().find(|w| w.contains('@'))?;
            endpoint_spec(token)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn conv() -> Conventions {
        Conventions {
            node_name: "test-node".into(),
            node_ips: vec![Ipv4Addr::new(192, 168, 0, 2), Ipv4Addr::new(192, 168, 1, 2)],
            primary_ip: Ipv4Addr::new(192, 168, 0, 2),
            pod_cidr: "10.0.0.0/8".parse().unwrap(),
            service_cidr: "172.30.0.0/16".parse().unwrap(),
            external_client: Ipv4Addr::new(203, 0, 113, 2),
            blocked_client: Ipv4Addr::new(203, 0, 113, 130),
        }
    }

    #[test]
    fn sources_are_read_from_the_words() {
        let c = conv();
        let none = BTreeMap::new();
        assert_eq!(
            source("pod 10.180.0.1 (the backend itself)", &none, &c),
            Source::Pod(Ipv4Addr::new(10, 180, 0, 1))
        );
        assert_eq!(source("pod", &none, &c), Source::Pod(DEFAULT_POD));
        assert_eq!(
            source("external 203.0.113.130", &none, &c),
            Source::External(c.blocked_client)
        );
        assert_eq!(
            source("node 192.168.0.2", &none, &c),
            Source::Node(c.primary_ip)
        );
        assert!(matches!(
            source("1.2.3.4", &none, &c),
            Source::Unsupported(_)
        ));
        let mut s = BTreeMap::new();
        s.insert("pod".to_string(), Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(
            source("pod", &s, &c),
            Source::Pod(Ipv4Addr::new(10, 0, 0, 9))
        );
    }

    #[test]
    fn tolerant_addresses_and_endpoint_notation() {
        assert_eq!(
            parse_ip("192.168.099.022"),
            Some(Ipv4Addr::new(192, 168, 99, 22))
        );
        assert_eq!(
            endpoint_spec("10.0.1.3 !R S T @another-node"),
            Some(EndpointSpec {
                ip: Ipv4Addr::new(10, 0, 1, 3),
                node: Some("another-node".into()),
                ready: Some(false),
                serving: Some(true),
                terminating: Some(true),
            })
        );
        let e = endpoints_in_prose("iTP Local; 10.0.1.1@test-node, 10.0.1.2@node1 (no local)");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].node.as_deref(), Some("node1"));
    }

    #[test]
    fn expectations_and_wildcards() {
        let rows: Vec<Value> = serde_norway::from_str(
            r#"
- {flow: a, output: ["10.0.0.1:80"], masq: false}
- {flow: "(all six other flows)", output: DROP}
"#,
        )
        .unwrap();
        let a = expect_of(match_rows(&rows, "a").unwrap()).unwrap();
        assert_eq!(a.masq, Some(false));
        assert_eq!(a.to_string(), "10.0.0.1:80 no-masq");
        let b = expect_of(match_rows(&rows, "b").unwrap()).unwrap();
        assert_eq!(b.output, Output::Drop);
        let prose: Value = serde_norway::from_str("{output: connection error}").unwrap();
        assert!(expect_of(&prose).is_err());
    }
}
