//! The `healthCheckNodePort` responder of LoadBalancer Services with
//! `externalTrafficPolicy: Local`, answering like kube-proxy's: an external
//! load balancer polls every node on that port and sends traffic only to
//! nodes answering 200, i.e. nodes with a local ready endpoint (the datapath
//! drops external traffic on the others).
//!
//! Any path gets the answer. Status 200 iff the Service has a local ready
//! endpoint and the proxy is healthy, else 503; the body is
//! `{"service":{"namespace":…,"name":…},"localEndpoints":N,"serviceProxyHealthy":…}`
//! and `X-Load-Balancing-Endpoint-Weight: N`. Terminating endpoints do not
//! count, so a node whose last local pod is shutting down is drained.

use axum::extract::State;
use axum::http::header::{HeaderName, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::task::AbortHandle;

/// One Service's health-check port and what it reports (computed by the
/// engine: ready endpoints on this node, terminating ones excluded).
pub use sluice_core::HealthCheckSpec as HealthCheck;

#[derive(Debug, Clone, Serialize)]
struct ServiceRef {
    namespace: String,
    name: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    service: ServiceRef,
    local_endpoints: usize,
    service_proxy_healthy: bool,
}

#[derive(Default)]
struct Shared {
    /// port → what that port reports now.
    checks: BTreeMap<u16, HealthCheck>,
    /// False while the datapath does not hold the compiled state (a map
    /// write failed): the load balancer should then prefer other nodes.
    proxy_healthy: bool,
}

/// The listeners, one per health-check port, reconciled by [`sync`](Self::sync).
pub struct HealthServer {
    runtime: tokio::runtime::Handle,
    shared: Arc<Mutex<Shared>>,
    listeners: BTreeMap<u16, AbortHandle>,
}

const WEIGHT_HEADER: &str = "x-load-balancing-endpoint-weight";

impl HealthServer {
    /// Listeners are spawned on `runtime`; `sync` itself may be called
    /// from any thread (the controller's).
    pub fn new(runtime: tokio::runtime::Handle) -> Self {
        Self {
            runtime,
            shared: Arc::new(Mutex::new(Shared {
                checks: BTreeMap::new(),
                proxy_healthy: true,
            })),
            listeners: BTreeMap::new(),
        }
    }

    /// Ports currently served.
    pub fn ports(&self) -> Vec<u16> {
        self.listeners.keys().copied().collect()
    }

    pub fn set_proxy_healthy(&self, healthy: bool) {
        self.lock().proxy_healthy = healthy;
    }

    /// Serves exactly `checks`: opens listeners for new ports, closes those
    /// of Services that are gone, updates counts in place. A port that
    /// cannot be bound (taken by another process) is logged and skipped;
    /// the others are served, and the next sync tries it again.
    pub fn sync(&mut self, checks: Vec<HealthCheck>) {
        let wanted: BTreeMap<u16, HealthCheck> = checks.into_iter().map(|c| (c.port, c)).collect();
        let gone: Vec<u16> = self
            .listeners
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for port in gone {
            if let Some(task) = self.listeners.remove(&port) {
                task.abort();
                tracing::info!(port, "health-check port closed");
            }
        }
        self.lock().checks = wanted.clone();
        for (port, check) in wanted {
            if self.listeners.contains_key(&port) {
                continue;
            }
            match self.listen(port) {
                Ok(task) => {
                    tracing::info!(port, service = %format!("{}/{}", check.namespace, check.name),
                        "serving health-check node port");
                    self.listeners.insert(port, task);
                }
                Err(e) => {
                    tracing::warn!(port, service = %format!("{}/{}", check.namespace, check.name),
                    error = %e, "cannot serve health-check node port")
                }
            }
        }
    }

    fn listen(&self, port: u16) -> std::io::Result<AbortHandle> {
        // Bound here, synchronously, so a taken port is reported at once.
        let std_listener =
            std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))?;
        std_listener.set_nonblocking(true)?;
        let app = Router::new()
            .fallback(answer)
            .with_state((port, self.shared.clone()));
        let _guard = self.runtime.enter();
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let task = self.runtime.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(port, error = %e, "health-check listener stopped");
            }
        });
        Ok(task.abort_handle())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        for task in self.listeners.values() {
            task.abort();
        }
    }
}

async fn answer(State((port, shared)): State<(u16, Arc<Mutex<Shared>>)>) -> Response {
    let (check, healthy) = {
        let s = shared.lock().unwrap_or_else(PoisonError::into_inner);
        (s.checks.get(&port).cloned(), s.proxy_healthy)
    };
    // The listener outlived its Service for the instant before its abort.
    let Some(check) = check else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let status = if check.local_endpoints > 0 && healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Answer {
        service: ServiceRef {
            namespace: check.namespace,
            name: check.name,
        },
        local_endpoints: check.local_endpoints,
        service_proxy_healthy: healthy,
    };
    let json = serde_json::to_string(&body).unwrap_or_default();
    let mut resp = (status, json).into_response();
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static(WEIGHT_HEADER),
        HeaderValue::from(check.local_endpoints),
    );
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(port: u16) -> String {
        let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn check(port: u16, n: usize) -> HealthCheck {
        HealthCheck {
            namespace: "ns".into(),
            name: "svc".into(),
            port,
            local_endpoints: n,
        }
    }

    #[test]
    fn answers_like_kube_proxy_and_follows_syncs() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut hs = HealthServer::new(rt.handle().clone());
        let port = free_port();

        hs.sync(vec![check(port, 2)]);
        let r = get(port);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("x-load-balancing-endpoint-weight: 2"), "{r}");
        assert!(
            r.contains(r#"{"service":{"namespace":"ns","name":"svc"},"localEndpoints":2,"serviceProxyHealthy":true}"#),
            "{r}"
        );

        hs.sync(vec![check(port, 0)]);
        let r = get(port);
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains(r#""localEndpoints":0"#), "{r}");

        hs.sync(vec![check(port, 1)]);
        hs.set_proxy_healthy(false);
        let r = get(port);
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(r.contains(r#""serviceProxyHealthy":false"#), "{r}");

        hs.sync(Vec::new());
        assert!(hs.ports().is_empty());
        // The aborted listener closes its socket on the runtime; poll briefly.
        let closed = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
        });
        assert!(closed, "port {port} still open after its Service went away");
    }

    #[test]
    fn a_taken_port_is_skipped_and_the_rest_served() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut hs = HealthServer::new(rt.handle().clone());
        let taken = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
        let taken_port = taken.local_addr().unwrap().port();
        let free = free_port();
        hs.sync(vec![check(taken_port, 1), check(free, 1)]);
        assert_eq!(hs.ports(), vec![free]);
        drop(taken);
        // Retried on the next sync.
        hs.sync(vec![check(taken_port, 1), check(free, 1)]);
        let mut ports = hs.ports();
        ports.sort_unstable();
        let mut want = vec![taken_port, free];
        want.sort_unstable();
        assert_eq!(ports, want);
    }
}
