//! Results per case, printed as they come: one line per case, the
//! expected and observed matrices of the failing probe, a summary; or one
//! JSON object per case for scripts.

use super::cases::PortProto;
use super::matrix::{side_by_side, Matrix, PodId};
use crate::output::Output;
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeReport {
    pub probe: PortProto,
    pub expected: Matrix,
    pub observed: Matrix,
    pub passed: bool,
    pub rounds: u32,
    pub elapsed: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct StepReport {
    pub action: String,
    /// Objects of the runner's files the agent rejected.
    pub rejected: Vec<String>,
    pub probes: Vec<ProbeReport>,
}

#[derive(Debug, Clone)]
pub struct CaseReport {
    pub file: String,
    pub name: String,
    pub verdict: Verdict,
    /// Why it failed or was skipped, in a sentence.
    pub reason: Option<String>,
    pub steps_total: usize,
    /// The steps that ran, the failing one last.
    pub steps: Vec<StepReport>,
    pub duration: Duration,
}

impl CaseReport {
    /// A case that never reached the sandbox (malformed, skipped).
    pub fn without_steps(file: &str, name: &str, verdict: Verdict, reason: String) -> Self {
        Self {
            file: file.to_string(),
            name: name.to_string(),
            verdict,
            reason: Some(reason),
            steps_total: 0,
            steps: Vec::new(),
            duration: Duration::ZERO,
        }
    }
}

/// The case as text: the verdict line, and for a failure the reason and
/// the failing probe's matrices.
pub fn render_text(r: &CaseReport) -> String {
    let mut out = format!("{}  {} {}", r.verdict.word(), r.file, r.name);
    if r.verdict == Verdict::Skip {
        if let Some(reason) = &r.reason {
            out.push_str(&format!(" ({reason})"));
        }
        out.push('\n');
        return out;
    }
    out.push('\n');
    if r.verdict == Verdict::Pass {
        return out;
    }
    if let Some(reason) = &r.reason {
        for l in reason.lines() {
            out.push_str(&format!("      {l}\n"));
        }
    }
    let Some((i, step)) = r.steps.iter().enumerate().next_back() else {
        return out;
    };
    let where_ = if step.action.is_empty() {
        format!("step {}/{}", i + 1, r.steps_total)
    } else {
        format!("step {}/{} ({})", i + 1, r.steps_total, step.action)
    };
    for rej in &step.rejected {
        out.push_str(&format!("      {where_}: the agent rejected {rej}\n"));
    }
    let shown = step
        .probes
        .iter()
        .find(|p| !p.passed)
        .or(step.probes.last());
    if let Some(p) = shown {
        let diff = p.expected.mismatches(&p.observed).len();
        let verdict = if diff == 0 {
            "matrix as expected".to_string()
        } else {
            format!("{diff} of 72 cells differ")
        };
        out.push_str(&format!(
            "      {where_}, probe {}: {verdict} ({} round{}, {:.1} s)\n",
            p.probe,
            p.rounds,
            if p.rounds == 1 { "" } else { "s" },
            p.elapsed.as_secs_f64()
        ));
        out.push_str(&side_by_side(
            &p.expected,
            &p.observed,
            &format!("expected {}", p.probe),
            "observed",
        ));
    }
    out
}

#[derive(Serialize)]
struct JsonMismatch {
    from: String,
    to: String,
    expected: &'static str,
    observed: &'static str,
}

#[derive(Serialize)]
struct JsonProbe {
    probe: String,
    passed: bool,
    rounds: u32,
    elapsed_ms: u64,
    /// Rows x/a … z/c in the case format, `-` on the diagonal.
    expected: Vec<String>,
    observed: Vec<String>,
    mismatches: Vec<JsonMismatch>,
}

#[derive(Serialize)]
struct JsonStep {
    step: usize,
    action: String,
    rejected: Vec<String>,
    probes: Vec<JsonProbe>,
}

#[derive(Serialize)]
struct JsonCase<'a> {
    file: &'a str,
    name: &'a str,
    result: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    duration_ms: u64,
    steps_total: usize,
    steps: Vec<JsonStep>,
}

fn word(allowed: bool) -> &'static str {
    if allowed {
        "allowed"
    } else {
        "blocked"
    }
}

pub fn render_json(r: &CaseReport) -> serde_json::Result<String> {
    let rows = |m: &Matrix| PodId::all().map(|p| m.row(p)).collect::<Vec<_>>();
    let steps = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| JsonStep {
            step: i + 1,
            action: s.action.clone(),
            rejected: s.rejected.clone(),
            probes: s
                .probes
                .iter()
                .map(|p| JsonProbe {
                    probe: p.probe.to_string(),
                    passed: p.passed,
                    rounds: p.rounds,
                    elapsed_ms: p.elapsed.as_millis() as u64,
                    expected: rows(&p.expected),
                    observed: rows(&p.observed),
                    mismatches: p
                        .expected
                        .mismatches(&p.observed)
                        .into_iter()
                        .map(|(from, to)| JsonMismatch {
                            from: from.to_string(),
                            to: to.to_string(),
                            expected: word(p.expected.get(from, to)),
                            observed: word(p.observed.get(from, to)),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    serde_json::to_string(&JsonCase {
        file: &r.file,
        name: &r.name,
        result: r.verdict,
        reason: r.reason.as_deref(),
        duration_ms: r.duration.as_millis() as u64,
        steps_total: r.steps_total,
        steps,
    })
}

/// Prints each case as soon as it is decided.
pub struct Printer {
    output: Output,
    pub reports: Vec<CaseReport>,
}

impl Printer {
    pub fn new(output: Output) -> Self {
        Self {
            output,
            reports: Vec::new(),
        }
    }

    pub fn case(&mut self, r: CaseReport) {
        match self.output {
            Output::Table => print!("{}", render_text(&r)),
            Output::Json => match render_json(&r) {
                Ok(line) => println!("{line}"),
                Err(e) => tracing::error!(error = %e, file = %r.file, "cannot encode a result"),
            },
        }
        self.reports.push(r);
    }

    pub fn count(&self, v: Verdict) -> usize {
        self.reports.iter().filter(|r| r.verdict == v).count()
    }

    /// `24 cases: 20 passed, 3 failed, 1 skipped in 95.2 s`; on stdout for
    /// people, on stderr in JSON mode (stdout is one object per case).
    pub fn summary(&self, elapsed: Duration) {
        let line = format!(
            "{} cases: {} passed, {} failed, {} skipped in {:.1} s",
            self.reports.len(),
            self.count(Verdict::Pass),
            self.count(Verdict::Fail),
            self.count(Verdict::Skip),
            elapsed.as_secs_f64()
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
    use super::super::cases::Protocol;
    use super::*;

    fn failing() -> CaseReport {
        let mut expected = Matrix::default();
        expected.set(
            PodId::parse("y/a").unwrap(),
            PodId::parse("x/a").unwrap(),
            false,
        );
        CaseReport {
            file: "01-x.yaml".into(),
            name: "should deny".into(),
            verdict: Verdict::Fail,
            reason: Some("probe 80/TCP did not match".into()),
            steps_total: 2,
            steps: vec![StepReport {
                action: "create policy".into(),
                rejected: vec!["netpol.yaml: document 1: unknown kind".into()],
                probes: vec![ProbeReport {
                    probe: PortProto {
                        port: 80,
                        protocol: Protocol::Tcp,
                    },
                    expected,
                    observed: Matrix::default(),
                    passed: false,
                    rounds: 1,
                    elapsed: Duration::from_millis(1200),
                }],
            }],
            duration: Duration::from_secs(2),
        }
    }

    #[test]
    fn text_shows_reason_rejection_and_matrices() {
        let t = render_text(&failing());
        assert!(t.starts_with("FAIL  01-x.yaml should deny\n"), "{t}");
        assert!(
            t.contains("step 1/2 (create policy): the agent rejected netpol.yaml"),
            "{t}"
        );
        assert!(
            t.contains("probe 80/TCP: 1 of 72 cells differ (1 round, 1.2 s)"),
            "{t}"
        );
        assert!(t.contains("[.]"), "{t}");
        let pass = CaseReport {
            verdict: Verdict::Pass,
            ..failing()
        };
        assert_eq!(render_text(&pass), "PASS  01-x.yaml should deny\n");
        let skip =
            CaseReport::without_steps("47.yaml", "sctp", Verdict::Skip, "no raw socket".into());
        assert_eq!(render_text(&skip), "SKIP  47.yaml sctp (no raw socket)\n");
    }

    #[test]
    fn json_is_one_object_with_mismatches() {
        let j: serde_json::Value = serde_json::from_str(&render_json(&failing()).unwrap()).unwrap();
        assert_eq!(j["result"], "fail");
        assert_eq!(j["steps"][0]["probes"][0]["mismatches"][0]["from"], "y/a");
        assert_eq!(
            j["steps"][0]["probes"][0]["mismatches"][0]["expected"],
            "blocked"
        );
        assert_eq!(j["steps"][0]["probes"][0]["expected"][3], "X..-.....");
        assert_eq!(
            j["steps"][0]["rejected"][0],
            "netpol.yaml: document 1: unknown kind"
        );
    }
}
