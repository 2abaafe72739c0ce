//! NetworkPolicy per-packet cost: new connections to a pod whose ingress
//! policy table holds N entries, against a pod no policy selects, sampled
//! in one round-robin loop so both share the machine's noise.
//!
//! Backend A is selected by one NetworkPolicy that allows the client on the
//! HTTP port and on N − 1 other ports (one `ports` item each, so one LPM
//! entry each: the compiler does not merge separately listed ports).
//! Backend B is selected by nothing. The client connects to both pod IPs
//! directly (no Service), so the only difference between the two is the
//! verdict: for A two endpoint lookups, the policy conntrack, the ipcache
//! and two LPM lookups in a trie of N entries; for B the two endpoint
//! lookups every packet pays once any local pod is selected. The same pair
//! is sampled before any policy exists too: that ratio says how alike the
//! two pods are without policy, so a difference is not blamed on policy.

use super::{client, events, objects, write_manifest, Bed, Latency};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use sluice_api::{EndpointPolicyView, IdentityView, Status};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const PODS_FILE: &str = "bench-pods.yaml";
const POLICY_FILE: &str = "bench-netpol.yaml";
/// The policy's other ports start here (above every port the bench uses),
/// one per entry, so at most this many entries fit below 65536.
const FIRST_EXTRA_PORT: u16 = 10000;
pub const MAX_ENTRIES: usize = 1 + (u16::MAX - FIRST_EXTRA_PORT) as usize + 1;
/// A port the policy does not allow and nothing listens on: a policy drop
/// shows as a connect timeout, an unenforced policy as "refused" (RST).
const DENIED_PORT: u16 = 9;

#[derive(Debug, Clone, Serialize, Default)]
pub struct PolicyResult {
    /// Entries in backend A's policy table, read back from the agent
    /// (`GET /v1/policy/endpoints`).
    pub entries_a: usize,
    /// `policy.entries` of `GET /v1/status` (every local endpoint).
    pub entries_total: usize,
    /// New connections sampled per pod and phase.
    pub samples: usize,
    /// No policy at all: A and B in one loop.
    pub before_a: Latency,
    pub before_b: Latency,
    /// A selected (N entries), B not selected, in one loop.
    pub with_a: Latency,
    pub with_b: Latency,
    /// with_a ÷ with_b (medians): the cost of the policy, same loop.
    pub ratio: f64,
    /// Flow events per connection to A (the policy reports each allowed
    /// new flow; B's direct connections report none).
    pub events_per_connection_a: f64,
    /// The same loop again with the agent stopped (SIGSTOP), so that no
    /// event wakes it: the datapath's share of the cost.
    pub paused_a: Latency,
    pub paused_b: Latency,
    pub ratio_agent_paused: f64,
    /// before_a ÷ before_b: how alike the pods are without any policy.
    pub ratio_before: f64,
    /// Policy file in place → the agent reports the entries programmed.
    pub programmed_ms: f64,
    /// From the agent's log line "policy maps updated": compile alone, and
    /// compile + map writes, with the number of writes.
    pub agent_compile_ms: Option<f64>,
    pub agent_total_ms: Option<f64>,
    pub agent_writes: Option<u64>,
    /// A connection to A on a port the policy does not allow timed out
    /// (dropped) instead of being refused: the policy is enforced.
    pub denied_port_dropped: bool,
}

fn label(pod: &str) -> String {
    format!("bench-{pod}")
}

/// Pod objects for the sandbox's pods, labelled `app: bench-<name>`: the
/// agent gives policy identities to pods it has both an object and a CNI
/// registration for.
fn pods_yaml(bed: &Bed) -> String {
    let mut s = String::new();
    for p in std::iter::once(&bed.client).chain(&bed.backends) {
        let _ = write!(
            s,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels:\n    app: {app}\nspec:\n  containers:\n  - name: c\n    ports:\n    - name: http\n      containerPort: {port}\n",
            name = p.name,
            ns = p.namespace,
            app = label(&p.name),
            port = objects::TARGET_PORT,
        );
    }
    s
}

/// One NetworkPolicy selecting only `target`: ingress from `client` on the
/// HTTP port plus `entries - 1` other ports, one entry each.
fn policy_yaml(namespace: &str, target: &str, client: &str, entries: usize) -> String {
    let mut s = String::with_capacity(entries * 32 + 400);
    let _ = write!(
        s,
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: bench-policy-cost\n  namespace: {namespace}\nspec:\n  podSelector:\n    matchLabels:\n      app: {}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector:\n        matchLabels:\n          app: {}\n    ports:\n    - {{protocol: TCP, port: {}}}\n",
        label(target),
        label(client),
        objects::TARGET_PORT,
    );
    for i in 0..entries.saturating_sub(1) {
        let _ = writeln!(
            s,
            "    - {{protocol: TCP, port: {}}}",
            usize::from(FIRST_EXTRA_PORT) + i
        );
    }
    s
}

/// Runs the part, then removes its manifests whatever happened, so the
/// parts after it run without policy.
pub async fn run(bed: &Bed, entries: usize, samples: usize) -> Result<PolicyResult> {
    let result = measure(bed, entries, samples).await;
    let dir = bed.sb.manifests_dir();
    let _ = std::fs::remove_file(dir.join(POLICY_FILE));
    let _ = std::fs::remove_file(dir.join(PODS_FILE));
    let cleaned = wait_status(bed, Duration::from_secs(30), |s| {
        s.policy.enforced_endpoints == 0 && s.policy.entries == 0
    })
    .await
    .context("the agent did not remove the benchmark's NetworkPolicy");
    let r = result?;
    cleaned?;
    Ok(r)
}

async fn measure(bed: &Bed, entries: usize, samples: usize) -> Result<PolicyResult> {
    if entries > MAX_ENTRIES {
        bail!("--policy-entries {entries}: at most {MAX_ENTRIES} (one TCP port per entry)");
    }
    let [a, b] = [&bed.backends[0], &bed.backends[1]];
    let dir = bed.sb.manifests_dir();
    write_manifest(dir, PODS_FILE, &pods_yaml(bed))?;
    // Identities exist once the agent has the Pod objects of all three pods.
    let names: Vec<String> = std::iter::once(&bed.client)
        .chain(&bed.backends)
        .map(|p| p.full_name())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids: Vec<IdentityView> = bed.api.get("/v1/identities").await?;
        if names
            .iter()
            .all(|n| ids.iter().any(|i| i.kind == "pod" && i.pods.contains(n)))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the agent gave no identity to the benchmark pods within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ns = bed.client.netns.clone();
    let to_a = SocketAddr::from((a.ip, objects::TARGET_PORT));
    let to_b = SocketAddr::from((b.ip, objects::TARGET_PORT));
    let mut before = client::latencies(&ns, &[to_a, to_b], samples)?.into_iter();
    let before_a = Latency::of(before.next().unwrap_or_default());
    let before_b = Latency::of(before.next().unwrap_or_default());

    let rev0 = status(bed).await?.policy.revision;
    let text = policy_yaml(&a.namespace, &a.name, &bed.client.name, entries);
    let t0 = Instant::now();
    write_manifest(dir, POLICY_FILE, &text)?;
    let st = wait_status(bed, Duration::from_secs(120), |s| {
        s.policy.revision != rev0 && s.policy.enforced_endpoints > 0 && s.policy.entries > 0
    })
    .await
    .context("the agent did not program the benchmark's NetworkPolicy")?;
    let programmed_ms = t0.elapsed().as_secs_f64() * 1e3;

    let views: Vec<EndpointPolicyView> = bed.api.get("/v1/policy/endpoints").await?;
    let view = |name: &str| views.iter().find(|v| v.pod == name);
    let va = view(&a.full_name()).context("backend A has no policy view")?;
    if !va.ingress_enforced {
        bail!("backend A is not ingress-enforced: {va:?}");
    }
    if view(&b.full_name()).is_some_and(|v| v.ingress_enforced || v.egress_enforced) {
        bail!("backend B is selected by a policy; it must not be");
    }
    let entries_a = va.entries.len();

    let denied = SocketAddr::from((a.ip, DENIED_PORT));
    let denied_port_dropped = sluice_testbed::run_in_netns(&ns, move || {
        TcpStream::connect_timeout(&denied, Duration::from_millis(300))
    })?
    .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut);
    if !denied_port_dropped {
        bail!("a connection to backend A on port {DENIED_PORT} was not dropped: the policy is not enforced");
    }

    let pin = events::pin_dir(bed);
    let c0 = events::settled(bed, &pin).await?;
    let mut with = client::latencies(&ns, &[to_a, to_b], samples)?.into_iter();
    let with_a = Latency::of(with.next().unwrap_or_default());
    let with_b = Latency::of(with.next().unwrap_or_default());
    let c1 = events::settled(bed, &pin).await?;
    let conns_a = samples + client::WARMUP.min(samples);
    let events_per_connection_a =
        (c1.received + c1.lost).saturating_sub(c0.received + c0.lost) as f64 / conns_a as f64;

    // The same loop with the agent stopped: its event reader is not woken
    // per allowed flow, which leaves the datapath's own cost. The ring
    // buffer keeps the events meanwhile (one per connection to A, far
    // below its capacity), and the agent reads them when it resumes.
    let paused = {
        let _stopped = StoppedAgent::stop(bed)?;
        client::latencies(&ns, &[to_a, to_b], samples)
    };
    let mut paused = paused?.into_iter();
    let paused_a = Latency::of(paused.next().unwrap_or_default());
    let paused_b = Latency::of(paused.next().unwrap_or_default());

    let logged = agent_log_timing(&bed.sb.agent_log(), st.policy.entries);
    Ok(PolicyResult {
        entries_a,
        entries_total: st.policy.entries,
        samples,
        ratio: with_a.median_us / with_b.median_us.max(1e-3),
        ratio_agent_paused: paused_a.median_us / paused_b.median_us.max(1e-3),
        events_per_connection_a,
        ratio_before: before_a.median_us / before_b.median_us.max(1e-3),
        before_a,
        before_b,
        with_a,
        with_b,
        paused_a,
        paused_b,
        programmed_ms,
        agent_compile_ms: logged.map(|l| l.compile_us as f64 / 1e3),
        agent_total_ms: logged.map(|l| l.total_us as f64 / 1e3),
        agent_writes: logged.map(|l| l.writes),
        denied_port_dropped,
    })
}

/// The sandbox's agent, stopped until this is dropped (also on an error
/// in between: the cleanup after the measurement needs a live agent).
struct StoppedAgent(Option<i32>);

impl StoppedAgent {
    fn stop(bed: &Bed) -> Result<Self> {
        let pid = bed
            .sb
            .agent_pid()
            .and_then(|p| i32::try_from(p).ok())
            .context("the sandbox has no agent process")?;
        // SAFETY: kill(2) with the pid of the agent this sandbox spawned
        // (a child of this process, so the pid cannot be reused while we
        // hold the Child) and a valid signal.
        if unsafe { libc::kill(pid, libc::SIGSTOP) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot stop the agent");
        }
        Ok(Self(Some(pid)))
    }
}

impl Drop for StoppedAgent {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
}

async fn status(bed: &Bed) -> Result<Status> {
    Ok(bed.api.get("/v1/status").await?)
}

async fn wait_status(bed: &Bed, limit: Duration, done: impl Fn(&Status) -> bool) -> Result<Status> {
    let deadline = Instant::now() + limit;
    loop {
        let s = status(bed).await?;
        if done(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {limit:?}; agent policy status: {:?}",
                s.policy
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoggedSync {
    writes: u64,
    compile_us: u64,
    total_us: u64,
}

/// The agent's last "policy maps updated" line for `entries` entries. The
/// log is human-oriented text (with colours when the agent thinks it may),
/// so a missing or reworded line only loses this optional number.
fn agent_log_timing(log: &std::path::Path, entries: usize) -> Option<LoggedSync> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .filter(|l| l.contains("policy maps updated"))
        .map(strip_ansi)
        .find_map(|l| {
            let field = |name: &str| -> Option<u64> {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
            };
            (field("entries")? == entries as u64).then_some(LoggedSync {
                writes: field("writes")?,
                compile_us: field("compile_us")?,
                total_us: field("total_us")?,
            })
        })
}

/// Removes terminal colour sequences (`ESC [ … m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_with_one_port_item_per_entry_selecting_only_the_target() {
        let text = policy_yaml("bench", "backend-a", "client", 50);
        let out = sluice_core::parse_documents("p.yaml", &text);
        assert!(out.rejections.is_empty(), "{:?}", out.rejections);
        assert_eq!(text.matches("protocol: TCP").count(), 50);
        assert!(text.contains("app: bench-backend-a") && text.contains("app: bench-client"));
        assert!(!text.contains(&format!("port: {DENIED_PORT}}}")));
        assert_eq!(MAX_ENTRIES, 55537);
    }

    #[test]
    fn reads_the_agents_log_line_with_or_without_colours() {
        let dir = std::env::temp_dir().join(format!("slc-bench-log-{}", std::process::id()));
        let plain = "2025-01-01T00:00:00Z  INFO sluice_agent::policy: policy maps updated writes=10004 revision=2 endpoints=3 entries=10000 compile_us=5123 total_us=61234\n";
        let coloured = "\u{1b}[2m2025\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m policy maps updated \u{1b}[3mwrites\u{1b}[0m\u{1b}[2m=\u{1b}[0m7 \u{1b}[3mentries\u{1b}[0m\u{1b}[2m=\u{1b}[0m3 \u{1b}[3mcompile_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m10 \u{1b}[3mtotal_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m20\n";
        std::fs::write(&dir, format!("{plain}{coloured}")).unwrap_or(());
        assert_eq!(
            agent_log_timing(&dir, 10000),
            Some(LoggedSync {
                writes: 10004,
                compile_us: 5123,
                total_us: 61234
            })
        );
        assert_eq!(
            agent_log_timing(&dir, 3),
            Some(LoggedSync {
                writes: 7,
                compile_us: 10,
                total_us: 20
            })
        );
        assert_eq!(agent_log_timing(&dir, 5), None);
        let _ = std::fs::remove_file(&dir);
    }
}
