//! Probing the matrix: from every pod to every other pod's Service
//! ClusterIP on one port, as a process of the source pod (its netns and
//! the pod cgroup, so the socket hooks see it as they would a real pod's),
//! and retrying like upstream until the observation matches.

use super::cases::{PortProto, Protocol};
use super::manifests::Cluster;
use super::matrix::{Matrix, PodId, N};
use anyhow::{Context, Result};
use sluice_testbed::ProbeKind;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// agnhost connect's timeout in the upstream probes.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes in flight at once: a blocked probe costs its full timeout, and
/// 72 of them one after another would take over a minute per round.
pub const CONCURRENCY: usize = 24;

/// Runs probe rounds; cheap to share between tasks.
#[derive(Clone)]
pub struct Prober {
    pub sluice: PathBuf,
    pub cgroup: PathBuf,
    /// Network namespace of each model pod, in matrix order.
    pub netns: Arc<[PathBuf; N]>,
    pub limit: Arc<Semaphore>,
}

/// What upstream's agnhost does per protocol: a TCP connect, a UDP
/// request that needs an answer, an SCTP INIT that needs an INIT-ACK.
fn kind(p: Protocol) -> ProbeKind {
    match p {
        Protocol::Tcp => ProbeKind::Connect,
        Protocol::Udp => ProbeKind::UdpConnected,
        Protocol::Sctp => ProbeKind::Sctp,
    }
}

impl Prober {
    /// One round: the 72 off-diagonal probes for `probe`, concurrently.
    /// The diagonal is not probed (never checked, see `matrix`) and comes
    /// back as allowed. An error means the probe could not be run at all,
    /// which is not the same as a blocked connection.
    pub async fn round(&self, probe: PortProto) -> Result<Matrix> {
        let mut tasks = tokio::task::JoinSet::new();
        for from in PodId::all() {
            for to in PodId::all().filter(|to| *to != from) {
                let permit = self.limit.clone().acquire_owned().await?;
                let this = self.clone();
                tasks.spawn_blocking(move || {
                    let _permit = permit;
                    let target = SocketAddr::from((Cluster::vip(to), probe.port));
                    let outcomes = sluice_testbed::probe_in(
                        &this.sluice,
                        &this.netns[from.index()],
                        Some(&this.cgroup),
                        kind(probe.protocol),
                        &[target],
                        1,
                        PROBE_TIMEOUT,
                    );
                    (from, to, outcomes)
                });
            }
        }
        let mut m = Matrix::default();
        while let Some(joined) = tasks.join_next().await {
            let (from, to, outcomes) = joined.context("a probe task panicked")?;
            let outcomes = outcomes.with_context(|| format!("cannot probe {from} → {to}"))?;
            let connected = outcomes.first().is_some_and(|o| o.error.is_none());
            m.set(from, to, connected);
        }
        Ok(m)
    }
}

/// How long to keep re-probing a matrix that differs from the expectation.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// From the start of one round to the start of the next.
    pub interval: Duration,
    /// No new round starts after this much time.
    pub budget: Duration,
}

/// Upstream polls every second for up to ten.
pub const UPSTREAM_RETRY: Retry = Retry {
    interval: Duration::from_secs(1),
    budget: Duration::from_secs(10),
};

#[derive(Debug, Clone)]
pub struct Outcome {
    pub passed: bool,
    /// The last round's matrix (the matching one when passed).
    pub observed: Matrix,
    pub rounds: u32,
    pub elapsed: Duration,
}

/// Probes with `round` until a whole round equals `expected` (diagonal
/// excepted), or `retry` says to give up; `None` means one round only.
pub async fn until_expected<F, Fut>(
    expected: &Matrix,
    retry: Option<Retry>,
    mut round: F,
) -> Result<Outcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Matrix>>,
{
    let start = Instant::now();
    let mut rounds = 0;
    loop {
        let round_start = Instant::now();
        let observed = round().await?;
        rounds += 1;
        let passed = expected.mismatches(&observed).is_empty();
        let give_up = match retry {
            None => true,
            Some(r) => {
                start.elapsed() + r.interval.saturating_sub(round_start.elapsed()) > r.budget
            }
        };
        if passed || give_up {
            return Ok(Outcome {
                passed,
                observed,
                rounds,
                elapsed: start.elapsed(),
            });
        }
        if let Some(r) = retry {
            tokio::time::sleep_until((round_start + r.interval).into()).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn blocked(from: &str, to: &str) -> Matrix {
        let mut m = Matrix::default();
        m.set(
            PodId::parse(from).unwrap(),
            PodId::parse(to).unwrap(),
            false,
        );
        m
    }

    const FAST: Retry = Retry {
        interval: Duration::from_millis(20),
        budget: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn passes_as_soon_as_a_round_matches() {
        let expected = blocked("x/a", "y/b");
        let mut n = 0;
        let out = until_expected(&expected, Some(FAST), || {
            n += 1;
            // Enforcement lands on the third round.
            let m = if n < 3 { Matrix::default() } else { expected };
            async move { Ok(m) }
        })
        .await
        .unwrap();
        assert!(out.passed);
        assert_eq!(out.rounds, 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_budget_with_the_last_observation() {
        let expected = blocked("x/a", "y/b");
        let out = until_expected(&expected, Some(FAST), || async { Ok(Matrix::default()) })
            .await
            .unwrap();
        assert!(!out.passed);
        assert!((8..=11).contains(&out.rounds), "{} rounds", out.rounds);
        assert!(
            out.elapsed <= FAST.budget + FAST.interval * 2,
            "{:?}",
            out.elapsed
        );
        assert_eq!(out.observed, Matrix::default());
    }

    #[tokio::test]
    async fn no_retry_means_one_round_and_errors_propagate() {
        let expected = blocked("x/a", "y/b");
        let out = until_expected(&expected, None, || async { Ok(Matrix::default()) })
            .await
            .unwrap();
        assert_eq!((out.passed, out.rounds), (false, 1));
        let err = until_expected(&expected, Some(FAST), || async {
            Err(anyhow::anyhow!("netns gone"))
        })
        .await;
        assert!(err.is_err());
    }

    #[tokio::test]
    async fn the_diagonal_never_fails_a_round() {
        let expected = Matrix::default();
        let out = until_expected(&expected, None, || async { Ok(blocked("z/c", "z/c")) })
            .await
            .unwrap();
        assert!(out.passed);
    }
}
