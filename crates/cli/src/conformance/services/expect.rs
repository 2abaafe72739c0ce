//! Judging what a client saw against what the file expects: which
//! backend answered, whom the backend saw as the client (masquerade), or
//! how the connection failed (REJECT = refused, DROP = timeout).

use super::cases::{Expect, Output, Source};
use sluice_testbed::ProbeOutcome;
use std::net::{Ipv4Addr, SocketAddrV4};

/// One attempt, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// A backend answered; `backend`/`peer` from its whoami answer.
    Answer {
        backend: SocketAddrV4,
        peer: SocketAddrV4,
    },
    /// Something answered without saying who it is.
    Anonymous(String),
    /// Connection refused (TCP RST, ICMP port unreachable, SCTP ABORT).
    Refused,
    /// ICMP host/net unreachable (normal routing found no way).
    Unreachable(String),
    /// No answer within the timeout.
    Timeout,
    Error(String),
}

impl std::fmt::Display for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Observed::Answer { backend, peer } => write!(f, "{backend} (saw client {})", peer.ip()),
            Observed::Anonymous(a) => write!(f, "answer {a:?} without backend identity"),
            Observed::Refused => write!(f, "refused"),
            Observed::Unreachable(e) => write!(f, "unreachable ({e})"),
            Observed::Timeout => write!(f, "timeout"),
            Observed::Error(e) => write!(f, "error ({e})"),
        }
    }
}

pub fn classify(o: &ProbeOutcome) -> Observed {
    if let Some(answer) = &o.answer {
        return match sluice_testbed::whoami::parse_answer(answer) {
            Some((std::net::SocketAddr::V4(b), std::net::SocketAddr::V4(p))) => Observed::Answer {
                backend: b,
                peer: p,
            },
            _ => Observed::Anonymous(answer.clone()),
        };
    }
    if o.refused {
        return Observed::Refused;
    }
    let e = o.error.clone().unwrap_or_default();
    let l = e.to_ascii_lowercase();
    if l.contains("timed out")
        || l.contains("(os error 11)")
        || l.contains("would block")
        || l.contains("temporarily unavailable")
        || l.contains("no sctp init-ack")
    {
        Observed::Timeout
    } else if l.contains("os error 113") || l.contains("os error 101") || l.contains("unreachable")
    {
        Observed::Unreachable(e)
    } else {
        Observed::Error(e)
    }
}

/// Prefix of a Captured flow's failure that flow events may still clear.
pub const NOT_CAPTURED_YET: &str = "no backend answered: ";

/// The verdict on one attempt: `Err` says why it does not match.
pub fn judge(
    expect: &Expect,
    source: &Source,
    node_ips: &[Ipv4Addr],
    seen: &Observed,
) -> Result<Option<String>, String> {
    match (&expect.output, seen) {
        (Output::Backends(set), Observed::Answer { backend, peer }) => {
            if !set.contains(backend) {
                return Err(format!(
                    "answered by {backend}, not one of the expected backends"
                ));
            }
            masq(expect.masq, source, node_ips, *peer.ip())
        }
        (Output::Backends(_), other) => Err(format!("expected a backend answer, got {other}")),
        (Output::Captured(set), Observed::Answer { backend, .. }) => {
            if set.contains(backend) {
                Ok(None)
            } else {
                Err(format!(
                    "answered by {backend}, not one of the expected backends"
                ))
            }
        }
        (Output::Captured(_), other) => Err(format!("{NOT_CAPTURED_YET}{other}")),
        (Output::Reject, Observed::Refused) => Ok(None),
        (Output::Drop, Observed::Timeout) => Ok(None),
        (Output::None, Observed::Answer { .. } | Observed::Anonymous(_)) => Err(format!(
            "expected nothing installed (normal routing, no backend), got {seen}"
        )),
        // A harness error proves nothing about routing.
        (Output::None, Observed::Error(e)) => Err(format!("the probe failed: {e}")),
        (Output::None, _) => Ok(Some(format!("not captured; normal routing gave: {seen}"))),
        (out, other) => Err(format!(
            "expected {}, got {other}",
            match out {
                Output::Reject => "REJECT (refused)",
                Output::Drop => "DROP (timeout)",
                _ => "?",
            }
        )),
    }
}

/// masq=true ⇔ the backend saw an address other than the client's own.
/// A node client's own address is a node address, so for it only "saw a
/// node address" can be checked, and the note says so.
fn masq(
    want: Option<bool>,
    source: &Source,
    node_ips: &[Ipv4Addr],
    seen: Ipv4Addr,
) -> Result<Option<String>, String> {
    let Some(want) = want else {
        return Ok(None);
    };
    let Some(client) = source.ip() else {
        return Err("no client address to compare with".into());
    };
    if let Source::Node(_) = source {
        return if node_ips.contains(&seen) {
            Ok(Some(format!(
                "backend saw node address {seen}: a node client cannot show masquerade either way"
            )))
        } else {
            Err(format!("backend saw {seen}, not a node address"))
        };
    }
    let masqueraded = seen != client;
    if masqueraded == want {
        Ok(None)
    } else if want {
        Err(format!(
            "backend saw the client's own address {seen}: not masqueraded"
        ))
    } else {
        Err(format!(
            "backend saw {seen} instead of the client {client}: masqueraded"
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    const NODE: [Ipv4Addr; 1] = [Ipv4Addr::new(192, 168, 0, 2)];

    #[test]
    fn a_wrong_backend_or_masquerade_is_a_mismatch() {
        let want = Expect {
            output: Output::Backends(vec![a("10.180.0.1:80")]),
            masq: Some(false),
        };
        let pod = Source::Pod(Ipv4Addr::new(10, 0, 0, 2));
        let ok = Observed::Answer {
            backend: a("10.180.0.1:80"),
            peer: a("10.0.0.2:4000"),
        };
        assert_eq!(judge(&want, &pod, &NODE, &ok), Ok(None));
        let other = Observed::Answer {
            backend: a("10.180.2.1:80"),
            peer: a("10.0.0.2:4000"),
        };
        assert!(judge(&want, &pod, &NODE, &other).is_err());
        let snat = Observed::Answer {
            backend: a("10.180.0.1:80"),
            peer: a("192.168.0.2:4000"),
        };
        assert!(judge(&want, &pod, &NODE, &snat).is_err());
        assert!(judge(&want, &pod, &NODE, &Observed::Refused).is_err());
    }

    #[test]
    fn reject_drop_and_none() {
        let src = Source::External(Ipv4Addr::new(203, 0, 113, 2));
        let e = |output| Expect { output, masq: None };
        assert!(judge(&e(Output::Reject), &src, &NODE, &Observed::Refused).is_ok());
        assert!(judge(&e(Output::Reject), &src, &NODE, &Observed::Timeout).is_err());
        assert!(judge(&e(Output::Drop), &src, &NODE, &Observed::Timeout).is_ok());
        assert!(judge(&e(Output::Drop), &src, &NODE, &Observed::Refused).is_err());
        assert!(judge(&e(Output::None), &src, &NODE, &Observed::Refused).is_ok());
        let answered = Observed::Answer {
            backend: a("10.180.0.1:80"),
            peer: a("203.0.113.2:1"),
        };
        assert!(judge(&e(Output::None), &src, &NODE, &answered).is_err());
        let broken = Observed::Error("no such netns".into());
        assert!(judge(&e(Output::None), &src, &NODE, &broken).is_err());
    }

    #[test]
    fn node_clients_only_show_a_node_address() {
        let want = Expect {
            output: Output::Backends(vec![a("10.180.0.1:80")]),
            masq: Some(true),
        };
        let node = Source::Node(NODE[0]);
        let seen = Observed::Answer {
            backend: a("10.180.0.1:80"),
            peer: a("192.168.0.2:5"),
        };
        assert!(judge(&want, &node, &NODE, &seen).unwrap().is_some());
        let pod_seen = Observed::Answer {
            backend: a("10.180.0.1:80"),
            peer: a("10.0.0.2:5"),
        };
        assert!(judge(&want, &node, &NODE, &pod_seen).is_err());
    }

    #[test]
    fn outcomes_are_classified() {
        let o = |answer: Option<&str>, error: Option<&str>, refused| ProbeOutcome {
            target: "172.30.0.41:80".parse().unwrap(),
            peer: None,
            answer: answer.map(str::to_string),
            error: error.map(str::to_string),
            refused,
            aborted: false,
            at_ms: None,
            fresh: false,
            wire_peer: None,
        };
        assert_eq!(
            classify(&o(Some("10.180.0.1:80 10.0.0.2:3"), None, false)),
            Observed::Answer {
                backend: a("10.180.0.1:80"),
                peer: a("10.0.0.2:3")
            }
        );
        assert_eq!(
            classify(&o(None, Some("connection refused"), true)),
            Observed::Refused
        );
        assert_eq!(
            classify(&o(None, Some("connection timed out"), false)),
            Observed::Timeout
        );
        assert_eq!(
            classify(&o(
                None,
                Some("Resource temporarily unavailable (os error 11)"),
                false
            )),
            Observed::Timeout
        );
        assert!(matches!(
            classify(&o(None, Some("No route to host (os error 113)"), false)),
            Observed::Unreachable(_)
        ));
    }
}
