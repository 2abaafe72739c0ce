//! svc-034, the conntrack-INVALID regression (kubernetes #74839), on one
//! node: while a client keeps a TCP connection to the Service open, the
//! backend's namespace forges segments on that connection far outside the
//! client's window (what the regression-issue-74839 image does). Such a
//! segment must never reach the client without its reverse translation:
//! the client would answer the unknown peer with a RST that kills the
//! real connection. Passes when the connection survives the injections
//! and the backend receives every byte the client sent.

use super::super::cases::Protocol;
use super::cases::Behaviour;
use super::e2e::with_world;
use super::kit::*;
use super::report::BehaviourReport;
use super::world::{Serve, Spec};
use super::Ctx;
use anyhow::{anyhow, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

const INJECTIONS: usize = 5;
const CHUNK: usize = 100;

/// The client side, in the client pod: connect, read who answered, send a
/// chunk, hand the backend-side view of the connection to the injector,
/// wait, send another chunk, close, read the byte count.
fn client(
    to: SocketAddrV4,
    seen_tx: mpsc::Sender<(SocketAddrV4, SocketAddrV4)>,
    go_rx: mpsc::Receiver<()>,
) -> Result<String> {
    let s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let (backend, peer) = sluice_testbed::whoami::parse_answer(&line)
        .ok_or_else(|| anyhow!("not a whoami answer: {line:?}"))?;
    let (SocketAddr::V4(backend), SocketAddr::V4(peer)) = (backend, peer) else {
        return Err(anyhow!("IPv6 answer {line:?}"));
    };
    let mut w = s.try_clone()?;
    w.write_all(&[b'a'; CHUNK])?;
    seen_tx.send((backend, peer))?;
    go_rx.recv_timeout(Duration::from_secs(10))?;
    // Give a RST, had one been sent, time to land.
    std::thread::sleep(Duration::from_millis(300));
    w.write_all(&[b'b'; CHUNK])?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut rest = String::new();
    reader.read_to_string(&mut rest)?;
    Ok(rest.trim().to_string())
}

pub async fn invalid_segments(ctx: &Ctx<'_>, b: &Behaviour) -> BehaviourReport {
    let vip = cluster_ip(ctx, 34);
    let Some(service) = sliced_service(b, vip, &[]) else {
        return BehaviourReport::unsupported(&b.id, &b.title, "no setup.services[0]");
    };
    let name = service_name(&service);
    let (port, _) = first_port(&service);
    let (client_ip, server) = (client_ip(ctx), backend_ip(ctx, 1));
    let port_name = service["spec"]["ports"][0]["name"].clone();
    let slice = slice_doc(
        &name,
        &format!("{name}-1"),
        &[(server, serde_json::json!({"ready": true}))],
        serde_json::json!([{"name": port_name, "port": port, "protocol": "TCP"}]),
    );
    let mut spec = Spec::default();
    spec.local.insert(client_ip, Serve::default());
    let mut s = Serve::default();
    s.add(Protocol::Tcp, port);
    spec.local.insert(server, s);
    spec.docs = vec![to_value(service.clone()), slice];
    with_world(ctx, b, spec, async |w, r| {
        r.notes.push(format!(
            "one node: boom-server = local pod {server} (whoami TCP on {port}), startup-script = local pod {client_ip}; \
             the runner forges the out-of-window segments from the server's namespace ({INJECTIONS} per connection) instead of the regression image; ClusterIP {vip} assigned by the runner"
        ));
        let client_ns = w.pods.get(&client_ip).map(|p| p.netns.clone()).ok_or_else(|| anyhow!("no client pod"))?;
        let server_ns = w.pods.get(&server).map(|p| p.netns.clone()).ok_or_else(|| anyhow!("no server pod"))?;
        let to = SocketAddrV4::new(vip, port);
        let (seen_tx, seen_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        let client_task = tokio::task::spawn_blocking(move || {
            sluice_testbed::run_in_netns(&client_ns, move || client(to, seen_tx, go_rx))
        });
        let injected = tokio::task::spawn_blocking(move || -> Result<(SocketAddrV4, SocketAddrV4)> {
            let (backend, peer) = seen_rx.recv_timeout(Duration::from_secs(10)).context("the client never connected")?;
            sluice_testbed::run_in_netns(&server_ns, move || -> std::io::Result<()> {
                for i in 0..INJECTIONS {
                    // Half the sequence space away: outside any window.
                    let seq = 0x8000_0000u32.wrapping_add(i as u32 * 1000);
                    sluice_testbed::tcp_inject::send_segment(backend, peer, seq, b"out of window")?;
                }
                Ok(())
            })??;
            let _ = go_tx.send(());
            Ok((backend, peer))
        })
        .await??;
        let outcome = client_task.await?;
        let (backend, peer) = injected;
        let (ok, observed) = match outcome {
            Ok(Ok(answer)) => {
                let want = format!("received {}", 2 * CHUNK);
                (answer == want, answer)
            }
            Ok(Err(e)) => (false, format!("connection broken: {e:#}")),
            Err(e) => (false, format!("client error: {e:#}")),
        };
        r.flows.push(fact(
            &format!("connection to {to} survives {INJECTIONS} forged segments {backend} → {peer}"),
            &format!("received {} (no reset)", 2 * CHUNK),
            &observed,
            ok,
        ));
        Ok(())
    })
    .await
}
