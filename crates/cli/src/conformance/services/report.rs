//! Results per behaviour: PASS / FAIL / UNSUPPORTED with every flow's
//! expected and observed outcome, as text or one JSON object per line.

use crate::output::Output;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Unsupported,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Unsupported => "UNSUPPORTED",
        }
    }
}

/// One flow (or scenario step): what was expected, what each attempt
/// showed, and its own verdict (Unsupported: it could not be run).
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub name: String,
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub expected: String,
    pub observed: Vec<String>,
    pub verdict: Verdict,
    /// Why it failed or could not run; notes on what it could not tell.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl FlowReport {
    pub fn unsupported(name: &str, from: &str, to: &str, reason: String) -> Self {
        Self {
            name: name.into(),
            from: from.into(),
            to: to.into(),
            protocol: String::new(),
            expected: String::new(),
            observed: Vec::new(),
            verdict: Verdict::Unsupported,
            notes: vec![reason],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BehaviourReport {
    pub id: String,
    pub title: String,
    pub verdict: Verdict,
    /// Why it failed or is unsupported, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Adaptations, scaled timeouts, which mode's table was used, ...
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub flows: Vec<FlowReport>,
    #[serde(rename = "duration_ms", serialize_with = "ms")]
    pub duration: Duration,
}

fn ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl BehaviourReport {
    pub fn new(id: &str, title: &str) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            verdict: Verdict::Unsupported,
            reason: None,
            notes: Vec::new(),
            flows: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// Nothing of it can run here.
    pub fn unsupported(id: &str, title: &str, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::new(id, title)
        }
    }

    /// An error: the behaviour FAILS with it (flows so far kept).
    pub fn error(&mut self, e: &anyhow::Error) {
        self.reason = Some(format!("error: {e:#}"));
        self.verdict = Verdict::Fail;
    }

    /// FAIL if any flow failed (or an error was recorded), else
    /// UNSUPPORTED if any flow could not run (or nothing ran), else PASS.
    pub fn decide(&mut self) {
        if self.verdict == Verdict::Fail && self.reason.is_some() {
            return;
        }
        let count = |v| self.flows.iter().filter(|f| f.verdict == v).count();
        let (failed, unsupported, passed) = (
            count(Verdict::Fail),
            count(Verdict::Unsupported),
            count(Verdict::Pass),
        );
        self.verdict = if failed > 0 {
            self.reason
                .get_or_insert_with(|| format!("{failed} of {} flows differ", self.flows.len()));
            Verdict::Fail
        } else if unsupported > 0 || passed == 0 {
            if self.reason.is_none() {
                let why: Vec<String> = self
                    .flows
                    .iter()
                    .filter(|f| f.verdict == Verdict::Unsupported)
                    .map(|f| format!("{}: {}", f.name, f.notes.join("; ")))
                    .collect();
                self.reason = Some(if why.is_empty() {
                    "nothing could be run".into()
                } else {
                    format!(
                        "{passed} of {} flows ran and passed; not run: {}",
                        self.flows.len(),
                        why.join(" | ")
                    )
                });
            }
            Verdict::Unsupported
        } else {
            Verdict::Pass
        };
    }
}

pub fn render_text(r: &BehaviourReport) -> String {
    let mut out = format!(
        "{:<11} {}  {} ({:.1} s)\n",
        r.verdict.word(),
        r.id,
        r.title,
        r.duration.as_secs_f64()
    );
    if let Some(reason) = &r.reason {
        out.push_str(&format!("            reason: {reason}\n"));
    }
    for n in &r.notes {
        out.push_str(&format!("            note: {n}\n"));
    }
    for f in &r.flows {
        let mark = match f.verdict {
            Verdict::Pass => "ok  ",
            Verdict::Fail => "FAIL",
            Verdict::Unsupported => "n/a ",
        };
        let proto = if f.protocol.is_empty() {
            String::new()
        } else {
            format!("/{}", f.protocol)
        };
        out.push_str(&format!(
            "    {mark} {}: {} → {}{proto}\n",
            f.name, f.from, f.to
        ));
        if !f.expected.is_empty() {
            out.push_str(&format!("           expected {}\n", f.expected));
        }
        if !f.observed.is_empty() {
            out.push_str(&format!("           observed {}\n", f.observed.join("; ")));
        }
        for n in &f.notes {
            out.push_str(&format!("           {n}\n"));
        }
    }
    out
}

pub struct Printer {
    output: Output,
    pub reports: Vec<BehaviourReport>,
}

impl Printer {
    pub fn new(output: Output) -> Self {
        Self {
            output,
            reports: Vec::new(),
        }
    }

    pub fn behaviour(&mut self, r: BehaviourReport) {
        match self.output {
            Output::Table => print!("{}", render_text(&r)),
            Output::Json => match serde_json::to_string(&r) {
                Ok(line) => println!("{line}"),
                Err(e) => tracing::error!(error = %e, id = %r.id, "cannot encode a result"),
            },
        }
        self.reports.push(r);
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.reports.iter().filter(|r| r.verdict == v).count()
    }

    pub fn summary(&self, elapsed: Duration) {
        let mut line = format!(
            "{} behaviours: {} passed, {} failed, {} unsupported in {:.1} s",
            self.reports.len(),
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Unsupported),
            elapsed.as_secs_f64()
        );
        line.push_str("\n  ");
        line.push_str(
            &self
                .reports
                .iter()
                .map(|r| format!("{} {}", r.verdict.word(), r.id))
                .collect::<Vec<_>>()
                .join("\n  "),
        );
        match self.output {
            Output::Table => println!("\n{line}"),
            Output::Json => eprintln!("{line}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn flow(v: Verdict) -> FlowReport {
        FlowReport {
            name: "f".into(),
            from: "pod 10.0.0.2".into(),
            to: "172.30.0.41:80".into(),
            protocol: "TCP".into(),
            expected: "10.180.0.1:80".into(),
            observed: vec!["10.180.2.1:80".into()],
            verdict: v,
            notes: Vec::new(),
        }
    }

    #[test]
    fn any_failing_flow_fails_the_behaviour_and_unsupported_never_passes() {
        let mut r = BehaviourReport::new("svc-x", "t");
        r.flows = vec![
            flow(Verdict::Pass),
            flow(Verdict::Fail),
            flow(Verdict::Unsupported),
        ];
        r.decide();
        assert_eq!(r.verdict, Verdict::Fail);
        let mut r = BehaviourReport::new("svc-x", "t");
        r.flows = vec![
            flow(Verdict::Pass),
            FlowReport::unsupported("g", "1.2.3.4", "x", "why".into()),
        ];
        r.decide();
        assert_eq!(r.verdict, Verdict::Unsupported);
        assert!(
            r.reason.as_deref().unwrap().contains("g: why"),
            "{:?}",
            r.reason
        );
        let mut r = BehaviourReport::new("svc-x", "t");
        r.decide();
        assert_eq!(r.verdict, Verdict::Unsupported, "nothing ran is not a pass");
        let mut r = BehaviourReport::new("svc-x", "t");
        r.flows = vec![flow(Verdict::Pass)];
        r.error(&anyhow::anyhow!("agent gone"));
        r.decide();
        assert_eq!(r.verdict, Verdict::Fail, "an error is a FAIL");
        let t = render_text(&r);
        assert!(t.starts_with("FAIL"), "{t}");
        assert!(t.contains("agent gone"), "{t}");
    }
}
