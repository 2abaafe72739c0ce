//! The case files of tests/cases/netpol (format: its README.md), parsed
//! into typed steps. A file that does not parse or breaks the format is a
//! failed case with the reason, never a panic and never a silent skip.

use super::matrix::{Matrix, PodId, NAMESPACES};
use super::placeholders;
use serde::{Deserialize, Serialize};
use serde_norway::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// As the model's port names spell it (`serve-80-tcp`).
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A served or probed port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortProto {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// Labels a step adds to the model's pods and namespaces (cumulative:
/// each step lists everything changed so far).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    pub pods: BTreeMap<PodId, BTreeMap<String, String>>,
    pub namespaces: BTreeMap<&'static str, BTreeMap<String, String>>,
}

#[derive(Debug, Clone)]
pub struct Case {
    pub file: String,
    pub name: String,
    /// What every pod serves, and so what its containers and Service list.
    pub served: Vec<PortProto>,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// What changed before this step (empty for single-step cases).
    pub action: String,
    pub labels: Labels,
    /// The complete set of policies in force, placeholders not yet filled.
    pub policies: Vec<Value>,
    /// In upstream order.
    pub probes: Vec<ProbeExpect>,
}

#[derive(Debug, Clone)]
pub struct ProbeExpect {
    pub probe: PortProto,
    pub expected: Matrix,
}

/// One file of the case directory, parsed or not.
#[derive(Debug)]
pub struct Loaded {
    pub file: String,
    /// The case's `name`, when the file got that far.
    pub name: Option<String>,
    pub case: Result<Case, String>,
}

impl Loaded {
    /// `--case` filters: a substring of the file name or the case name.
    pub fn matches(&self, filters: &[String]) -> bool {
        filters.is_empty()
            || filters.iter().any(|f| {
                self.file.contains(f.as_str())
                    || self.name.as_deref().is_some_and(|n| n.contains(f.as_str()))
            })
    }
}

/// Every `*.yaml` / `*.yml` in `dir`, sorted by file name. An unreadable
/// directory is an error; a bad file is a [`Loaded`] with its reason.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<Loaded>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(file) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && !file.starts_with("README") && path.is_file() {
            files.push((file.to_string(), path.clone()));
        }
    }
    files.sort();
    Ok(files
        .into_iter()
        .map(|(file, path)| match std::fs::read_to_string(&path) {
            Ok(text) => load(&file, &text),
            Err(e) => Loaded {
                file,
                name: None,
                case: Err(format!("cannot read: {e}")),
            },
        })
        .collect())
}

pub fn load(file: &str, text: &str) -> Loaded {
    // The name first, on its own: a file broken elsewhere still reports
    // under its case name.
    let name = serde_norway::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_string));
    Loaded {
        file: file.to_string(),
        name,
        case: parse(file, text),
    }
}

// The raw format. Top-level keys other than these (ginkgo_full_name,
// source, notes, latest_upstream_variant, …) record provenance and are
// ignored; everything that decides what is run or expected is strict, so a
// typo there fails the case instead of silently changing it.

#[derive(Deserialize)]
struct RawCase {
    name: String,
    model: RawModel,
    policies: Option<Vec<Value>>,
    probes: Option<Vec<PortProto>>,
    expect: Option<Vec<RawExpect>>,
    steps: Option<Vec<RawStep>>,
}

#[derive(Deserialize)]
struct RawModel {
    served: Vec<PortProto>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    probe: PortProto,
    #[serde(default)]
    #[allow(dead_code)] // documentation of how the matrix was built
    built_by: Vec<String>,
    matrix: Vec<RawRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    from: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    #[serde(default)]
    action: String,
    #[serde(default)]
    label_changes: RawLabels,
    policies: Vec<Value>,
    probes: Vec<PortProto>,
    expect: Vec<RawExpect>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLabels {
    pods: BTreeMap<String, BTreeMap<String, String>>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

fn parse(file: &str, text: &str) -> Result<Case, String> {
    let raw: RawCase = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let served = raw.model.served;
    if served.is_empty() {
        return Err("model.served is empty".into());
    }
    if served.iter().collect::<BTreeSet<_>>().len() != served.len() {
        return Err("model.served lists a port twice".into());
    }
    let raw_steps = match (raw.steps, raw.policies, raw.probes, raw.expect) {
        (Some(steps), None, None, None) if !steps.is_empty() => steps,
        (None, Some(policies), Some(probes), Some(expect)) => vec![RawStep {
            action: String::new(),
            label_changes: RawLabels::default(),
            policies,
            probes,
            expect,
        }],
        _ => {
            return Err(
                "give either `steps` (non-empty) or all of `policies`, `probes` and `expect`"
                    .into(),
            )
        }
    };
    let total = raw_steps.len();
    let steps = raw_steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| step(s, &served).map_err(|e| format!("step {}/{total}: {e}", i + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Case {
        file: file.to_string(),
        name: raw.name,
        served,
        steps,
    })
}

fn step(raw: RawStep, served: &[PortProto]) -> Result<Step, String> {
    if raw.probes.is_empty() {
        return Err("no probes".into());
    }
    let mut expect: BTreeMap<PortProto, RawExpect> = BTreeMap::new();
    for e in raw.expect {
        let probe = e.probe;
        if expect.insert(probe, e).is_some() {
            return Err(format!("two expectations for {probe}"));
        }
    }
    let mut probes = Vec::new();
    for probe in raw.probes {
        if !served.contains(&probe) {
            return Err(format!(
                "probe {probe} is not served (model.served), so nothing could answer it"
            ));
        }
        let e = expect
            .remove(&probe)
            .ok_or_else(|| format!("no expectation for probe {probe}"))?;
        let expected = Matrix::parse(e.matrix.iter().map(|r| (r.from.as_str(), r.to.as_str())))
            .map_err(|err| format!("matrix for {probe}: {err}"))?;
        probes.push(ProbeExpect { probe, expected });
    }
    if let Some(extra) = expect.keys().next() {
        return Err(format!("expectation for {extra}, which is not probed"));
    }
    for (i, p) in raw.policies.iter().enumerate() {
        if !p.is_mapping() {
            return Err(format!("policies[{i}] is not a manifest"));
        }
        placeholders::check(p).map_err(|e| format!("policies[{i}]: {e}"))?;
    }
    Ok(Step {
        action: raw.action,
        labels: labels(raw.label_changes)?,
        policies: raw.policies,
        probes,
    })
}

fn labels(raw: RawLabels) -> Result<Labels, String> {
    let mut out = Labels::default();
    for (pod, l) in raw.pods {
        let id = PodId::parse(&pod)
            .ok_or_else(|| format!("label_changes.pods: {pod:?} is not a pod of the model"))?;
        out.pods.insert(id, l);
    }
    for (ns, l) in raw.namespaces {
        let name = NAMESPACES
            .iter()
            .find(|n| **n == ns)
            .ok_or_else(|| format!("label_changes.namespaces: {ns:?} is not x, y or z"))?;
        out.namespaces.insert(name, l);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn vendored() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/netpol")
    }

    const ROWS: &str = "    - {from: x/a, to: \"X........\"}\n    - {from: x/b, to: \"X........\"}\n    - {from: x/c, to: \"X........\"}\n    - {from: y/a, to: \"X........\"}\n    - {from: y/b, to: \"X........\"}\n    - {from: y/c, to: \"X........\"}\n    - {from: z/a, to: \"X........\"}\n    - {from: z/b, to: \"X........\"}\n    - {from: z/c, to: \"X........\"}\n";

    fn single(extra: &str) -> String {
        format!(
            "name: t\nmodel:\n  served: [{{port: 80, protocol: TCP}}]\npolicies: []\nprobes: [{{port: 80, protocol: TCP}}]\nexpect:\n- probe: {{port: 80, protocol: TCP}}\n  matrix:\n{ROWS}{extra}"
        )
    }

    #[test]
    fn every_vendored_case_parses() {
        let loaded = load_dir(&vendored()).unwrap();
        assert_eq!(loaded.len(), 24, "24 case files besides the README");
        for l in &loaded {
            let case = l
                .case
                .as_ref()
                .unwrap_or_else(|e| panic!("{}: {e}", l.file));
            assert!(!case.steps.is_empty());
            assert_eq!(l.name.as_deref(), Some(case.name.as_str()));
        }
        let steps = |f: &str| {
            loaded
                .iter()
                .find(|l| l.file.starts_with(f))
                .and_then(|l| l.case.as_ref().ok())
                .map(|c| c.steps.clone())
                .unwrap()
        };
        let s = steps("21-");
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[1].labels.namespaces.get("y").and_then(|l| l.get("ns2")),
            Some(&"updated".to_string())
        );
        let s = steps("15-");
        assert_eq!(
            s[0].probes
                .iter()
                .map(|p| p.probe.to_string())
                .collect::<Vec<_>>(),
            ["81/TCP", "80/TCP"],
            "upstream probe order kept"
        );
        assert!(steps("33-")[1].policies.is_empty());
        assert_eq!(steps("47-")[0].probes[0].probe.protocol, Protocol::Sctp);
    }

    #[test]
    fn a_minimal_case_parses() {
        let l = load("t.yaml", &single(""));
        let c = l.case.unwrap();
        assert_eq!(c.steps.len(), 1);
        let xa = PodId::parse("x/a").unwrap();
        let yb = PodId::parse("y/b").unwrap();
        assert!(!c.steps[0].probes[0].expected.get(yb, xa));
        assert!(c.steps[0].probes[0].expected.get(xa, yb));
    }

    #[test]
    fn malformed_cases_say_why() {
        let err = |text: &str| load("bad.yaml", text).case.err().unwrap_or_default();
        // Not YAML at all, and YAML of the wrong shape.
        assert!(!err("name: 'unterminated\n").is_empty());
        assert!(
            err("name: [1]\n").contains("name"),
            "{}",
            err("name: [1]\n")
        );
        // Both shapes at once.
        let e = err(&format!("{}steps: []\n", single("")));
        assert!(e.contains("either `steps`"), "{e}");
        // A probe nobody serves.
        let e = err(&single("").replace(
            "probes: [{port: 80, protocol: TCP}]",
            "probes: [{port: 81, protocol: TCP}]",
        ));
        assert!(e.contains("81/TCP is not served"), "{e}");
        // A typo in a strict part.
        let e = err(&single("").replace("  matrix:", "  matrx:"));
        assert!(e.contains("matrx"), "{e}");
        // An unknown protocol, a short row, an unknown placeholder.
        assert!(
            err(&single("").replace("protocol: TCP}]\npolicies", "protocol: ICMP}]\npolicies"))
                .contains("ICMP")
        );
        let e = err(&single("").replace(
            "X........\"}\n    - {from: z/c",
            "X.......\"}\n    - {from: z/c",
        ));
        assert!(e.contains("8 cells"), "{e}");
        let e = err(&single("").replace(
            "policies: []",
            "policies:\n- {kind: NetworkPolicy, spec: {cidr: '{IP:q/a}'}}",
        ));
        assert!(e.contains("names no pod"), "{e}");
        // The name is still known for the report.
        let l = load("bad.yaml", &single("").replace("  matrix:", "  matrx:"));
        assert_eq!(l.name.as_deref(), Some("t"));
    }

    #[test]
    fn filters_match_file_or_name() {
        let l = load("07-podselector.yaml", &single(""));
        assert!(l.matches(&[]));
        assert!(l.matches(&["07-".into()]));
        assert!(l.matches(&["nomatch".into(), "t".into()]));
        assert!(!l.matches(&["08-".into()]));
    }
}
