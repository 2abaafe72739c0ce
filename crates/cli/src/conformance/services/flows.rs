//! Replaying flows with real connections: all flows of a world at once
//! (each its own client process), every attempt judged; a failing flow
//! gets one more round after a short pause (programming lag), and the
//! report says when it took two.

use super::cases::{Expect, Flow, Output, Source};
use super::expect::{classify, judge, Observed, NOT_CAPTURED_YET};
use super::report::{FlowReport, Verdict};
use super::world::World;
use sluice_testbed::ProbeOutcome;
use std::collections::BTreeMap;
use std::time::Duration;

/// The client's wait for an answer; DROP costs exactly this.
pub const TIMEOUT: Duration = Duration::from_millis(1500);
const RETRY_AFTER: Duration = Duration::from_millis(700);

/// A flow and what it must show (`Err`: why it cannot be judged).
pub struct Planned {
    pub flow: Flow,
    pub expect: Result<Expect, String>,
    /// Said on the report line (e.g. which table the expectation is from).
    pub note: Option<String>,
}

fn attempts(e: &Expect) -> usize {
    match &e.output {
        Output::Backends(b) if b.len() > 1 => 6,
        Output::Backends(_) => 3,
        _ => 1,
    }
}

/// Runs every planned flow concurrently; reports in the given order.
pub async fn run(world: &World, planned: &[Planned]) -> Vec<FlowReport> {
    // Only events from this run's probes may confirm what the datapath did.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut reports: Vec<Option<FlowReport>> = planned.iter().map(|_| None).collect();
    let mut pending = Vec::new();
    for (i, p) in planned.iter().enumerate() {
        match (&p.flow.source, &p.expect) {
            (Source::Unsupported(why), _) => {
                reports[i] = Some(base(p, Verdict::Unsupported, vec![why.clone()]));
            }
            (_, Err(why)) => reports[i] = Some(base(p, Verdict::Unsupported, vec![why.clone()])),
            (_, Ok(_)) => pending.push(i),
        }
    }
    for round in 0..2 {
        if pending.is_empty() {
            break;
        }
        if round > 0 {
            tokio::time::sleep(RETRY_AFTER).await;
        }
        // Every attempt is its own client process, all at once: a flow
        // that times out costs one timeout, not one per attempt.
        let mut set = tokio::task::JoinSet::new();
        let mut results: BTreeMap<usize, Vec<ProbeOutcome>> = BTreeMap::new();
        let mut errors: BTreeMap<usize, String> = BTreeMap::new();
        for &i in &pending {
            let p = &planned[i];
            let Ok(e) = &p.expect else { continue };
            results.insert(i, Vec::new());
            for _ in 0..attempts(e) {
                match world.job(&p.flow.source, p.flow.to, p.flow.protocol, 1, TIMEOUT, 0) {
                    Ok(job) => {
                        set.spawn_blocking(move || (i, job.run()));
                    }
                    Err(err) => {
                        errors.insert(i, format!("error: {err:#}"));
                    }
                }
            }
        }
        while let Some(joined) = set.join_next().await {
            let Ok((i, out)) = joined else { continue };
            match out {
                Ok(o) => results.entry(i).or_default().extend(o),
                Err(err) => {
                    errors.insert(i, format!("error: {err:#}"));
                }
            }
        }
        let mut again = Vec::new();
        for (i, outcomes) in results {
            let p = &planned[i];
            let Ok(e) = &p.expect else { continue };
            let r = match errors.remove(&i) {
                Some(err) => base(p, Verdict::Fail, vec![err]),
                None => {
                    let seen: Vec<Observed> = outcomes.iter().map(classify).collect();
                    judged(p, e, &seen, &world.conv.node_ips, round)
                }
            };
            if r.verdict == Verdict::Fail && round == 0 {
                again.push(i);
            }
            reports[i] = Some(r);
        }
        again.sort_unstable();
        pending = again;
    }
    let mut out: Vec<FlowReport> = reports
        .into_iter()
        .zip(planned)
        .map(|(r, p)| {
            r.unwrap_or_else(|| base(p, Verdict::Fail, vec!["the probe did not report".into()]))
        })
        .collect();
    verify_drops(world, planned, &mut out, since).await;
    out
}

async fn flow_events(world: &World) -> anyhow::Result<Vec<sluice_api::Flow>> {
    let mut events: Vec<sluice_api::Flow> = Vec::new();
    world
        .api
        .get_stream::<sluice_api::Flow>("/v1/flows?last=100000", |f| {
            events.push(f);
            true
        })
        .await?;
    Ok(events)
}

/// Whether `ev` is about flow `f` of this run: same client, destination
/// and protocol, recorded after the run's probes started.
fn about(ev: &sluice_api::Flow, f: &Flow, since: u64) -> bool {
    f.source.ip().is_some_and(|client| ev.source.ip == client)
        && ev.destination.ip == *f.to.ip()
        && ev.destination.port == f.to.port()
        && ev.protocol.eq_ignore_ascii_case(f.protocol.as_str())
        && ev.time_unix_ns >= since
}

/// The datapath's own record of dropping `f` (refusing it, when
/// `refused`), if any.
fn dropped<'a>(
    events: &'a [sluice_api::Flow],
    f: &Flow,
    since: u64,
    refused: bool,
) -> Option<&'a sluice_api::Flow> {
    events.iter().find(|ev| {
        ev.verdict == sluice_api::Verdict::Dropped
            && (!refused || ev.refused)
            && about(ev, f, since)
    })
}

/// The datapath's own record of forwarding `f` to a backend, if any.
fn forwarded<'a>(
    events: &'a [sluice_api::Flow],
    f: &Flow,
    since: u64,
) -> Option<&'a sluice_api::Flow> {
    events.iter().find(|ev| {
        ev.verdict == sluice_api::Verdict::Forwarded
            && !ev.reply
            && about(ev, f, since)
            && (ev.translated_destination.ip, ev.translated_destination.port)
                != (ev.destination.ip, ev.destination.port)
    })
}

/// A client timing out does not prove a DROP (or NONE): a backend may
/// have got the packet and answered along another path. The agent's flow
/// events say what the datapath did; such a flow it forwarded fails.
async fn verify_drops(world: &World, planned: &[Planned], reports: &mut [FlowReport], since: u64) {
    let drops: Vec<usize> = planned
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            match &p.expect {
                Ok(e) => match e.output {
                    Output::Drop | Output::None => reports[*i].verdict == Verdict::Pass,
                    // A node address refuses by itself (no listener): only
                    // the datapath's refused-drop event shows the proxy did.
                    Output::Reject => {
                        reports[*i].verdict == Verdict::Pass
                            && world.conv.node_ips.contains(p.flow.to.ip())
                    }
                    // Cleared only when the only complaint is "no answer".
                    Output::Captured(_) => {
                        reports[*i].verdict == Verdict::Fail
                            && reports[*i]
                                .notes
                                .iter()
                                .any(|n| n.starts_with(NOT_CAPTURED_YET))
                            && !reports[*i]
                                .notes
                                .iter()
                                .any(|n| n.starts_with("answered by"))
                    }
                    _ => false,
                },
                Err(_) => false,
            }
        })
        .map(|(i, _)| i)
        .collect();
    if drops.is_empty() {
        return;
    }
    // The agent reads the datapath's ring buffer every 50 ms: give it a
    // moment, and a second look if some flow has no event yet.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut got = flow_events(world).await;
    let unexplained = |events: &[sluice_api::Flow]| {
        drops.iter().any(|&i| {
            let f = &planned[i].flow;
            forwarded(events, f, since).is_none() && dropped(events, f, since, false).is_none()
        })
    };
    if matches!(&got, Ok(ev) if unexplained(ev)) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        got = flow_events(world).await;
    }
    let events = match got {
        Ok(e) => e,
        Err(e) => {
            for i in drops {
                reports[i].verdict = Verdict::Fail;
                reports[i].notes.push(format!(
                    "cannot read the agent's flow events to confirm what the datapath did: {e:#}"
                ));
            }
            return;
        }
    };
    for i in drops {
        let f = &planned[i].flow;
        if let Ok(Expect {
            output: Output::Captured(set),
            ..
        }) = &planned[i].expect
        {
            let to_backend = forwarded(&events, f, since).filter(|ev| {
                set.contains(&std::net::SocketAddrV4::new(
                    ev.translated_destination.ip,
                    ev.translated_destination.port,
                ))
            });
            match to_backend {
                Some(ev) => {
                    reports[i].verdict = Verdict::Pass;
                    reports[i]
                        .notes
                        .retain(|n| !n.starts_with(NOT_CAPTURED_YET));
                    reports[i].notes.push(format!(
                        "captured: flow events show it forwarded to {}:{} (its answer did not come back; masquerade is another behaviour's)",
                        ev.translated_destination.ip, ev.translated_destination.port
                    ));
                }
                None => reports[i]
                    .notes
                    .push("flow events: not forwarded to any backend either".into()),
            }
            continue;
        }
        if matches!(&planned[i].expect, Ok(e) if e.output == Output::Reject) {
            match dropped(&events, f, since, true) {
                Some(ev) => reports[i].notes.push(format!(
                    "flow events: refused by the datapath ({})",
                    ev.drop_reason.as_deref().unwrap_or("no reason given")
                )),
                None => {
                    reports[i].verdict = Verdict::Fail;
                    reports[i].notes.push(
                        "refused, but the datapath reported no refusal: the node's own stack \
                         answered (nothing listens there), the proxy did not reject it"
                            .into(),
                    );
                }
            }
            continue;
        }
        let is_drop = matches!(&planned[i].expect, Ok(e) if e.output == Output::Drop);
        match (
            forwarded(&events, f, since),
            dropped(&events, f, since, false),
        ) {
            (Some(ev), _) => {
                reports[i].verdict = Verdict::Fail;
                reports[i].notes.push(format!(
                    "no answer reached the client, but the datapath forwarded it to {}:{} \
                     (neither dropped nor left alone: the answer was lost on the way back)",
                    ev.translated_destination.ip, ev.translated_destination.port
                ));
            }
            (None, Some(ev)) if is_drop => reports[i].notes.push(format!(
                "flow events: dropped by the datapath ({})",
                ev.drop_reason.as_deref().unwrap_or("no reason given")
            )),
            (None, None) if is_drop => {
                reports[i].verdict = Verdict::Fail;
                reports[i].notes.push(
                    "the client timed out, but the datapath reported no drop of it either \
                     (the packet went elsewhere: not a proxy DROP)"
                        .into(),
                );
            }
            (None, _) => reports[i]
                .notes
                .push("flow events: not forwarded to any backend".into()),
        }
    }
}

fn base(p: &Planned, verdict: Verdict, mut notes: Vec<String>) -> FlowReport {
    notes.extend(p.note.clone());
    FlowReport {
        name: p.flow.name.clone(),
        from: p.flow.from.clone(),
        to: p.flow.to.to_string(),
        protocol: p.flow.protocol.as_str().to_string(),
        expected: p
            .expect
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        observed: Vec::new(),
        verdict,
        notes,
    }
}

/// Judges every attempt of one flow.
pub fn judged(
    p: &Planned,
    e: &Expect,
    seen: &[Observed],
    node_ips: &[std::net::Ipv4Addr],
    round: usize,
) -> FlowReport {
    let mut notes: Vec<String> = Vec::new();
    let mut failed = seen.is_empty();
    if seen.is_empty() {
        notes.push("no attempt reported".into());
    }
    for s in seen {
        match judge(e, &p.flow.source, node_ips, s) {
            Ok(Some(n)) => {
                if !notes.contains(&n) {
                    notes.push(n)
                }
            }
            Ok(None) => {}
            Err(why) => {
                failed = true;
                if !notes.contains(&why) {
                    notes.push(why)
                }
            }
        }
    }
    if round > 0 {
        notes.push(format!("round {} (the first did not match)", round + 1));
    }
    let mut r = base(p, if failed { Verdict::Fail } else { Verdict::Pass }, notes);
    let mut observed: Vec<String> = Vec::new();
    for s in seen {
        let t = s.to_string();
        if !observed.contains(&t) {
            observed.push(t);
        }
    }
    r.observed = observed;
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::super::cases::Protocol;
    use super::*;
    use std::net::Ipv4Addr;

    /// The runner can fail: an answer from a backend outside the
    /// expected set, or with the wrong client address, is a FAIL.
    #[test]
    fn a_mismatched_observation_is_a_fail() {
        let p = Planned {
            flow: Flow {
                name: "simple clusterIP".into(),
                from: "pod 10.180.0.2".into(),
                source: Source::Pod(Ipv4Addr::new(10, 180, 0, 2)),
                to: "172.30.0.41:80".parse().unwrap(),
                protocol: Protocol::Tcp,
            },
            expect: Ok(Expect {
                output: Output::Backends(vec!["10.180.0.1:80".parse().unwrap()]),
                masq: Some(false),
            }),
            note: None,
        };
        let e = p.expect.clone().unwrap();
        let node = [Ipv4Addr::new(192, 168, 0, 2)];
        let good = Observed::Answer {
            backend: "10.180.0.1:80".parse().unwrap(),
            peer: "10.180.0.2:40000".parse().unwrap(),
        };
        assert_eq!(
            judged(&p, &e, std::slice::from_ref(&good), &node, 0).verdict,
            Verdict::Pass
        );
        let wrong = Observed::Answer {
            backend: "10.180.2.1:80".parse().unwrap(),
            peer: "10.180.0.2:40000".parse().unwrap(),
        };
        let r = judged(&p, &e, &[good.clone(), wrong], &node, 0);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.notes[0].contains("10.180.2.1:80"), "{:?}", r.notes);
        let masqueraded = Observed::Answer {
            backend: "10.180.0.1:80".parse().unwrap(),
            peer: "192.168.0.2:40000".parse().unwrap(),
        };
        assert_eq!(
            judged(&p, &e, &[masqueraded], &node, 0).verdict,
            Verdict::Fail
        );
        assert_eq!(
            judged(&p, &e, &[Observed::Timeout], &node, 0).verdict,
            Verdict::Fail
        );
        assert_eq!(judged(&p, &e, &[], &node, 0).verdict, Verdict::Fail);
    }
}
