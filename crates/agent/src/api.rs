//! The HTTP/JSON API on a unix socket (routes listed in `sluice_api`).
//! Handlers only translate HTTP to [`Command`]s for the controller.

use crate::controller::{Command, Failure, Reply};
use crate::flows::Telemetry;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Serialize;
use sluice_api::{
    ApiError, EndpointRegistration, FlowQuery, IpamRelease, IpamRequest, PolicyTraceRequest,
    TraceConfig,
};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot};

type Tx = mpsc::Sender<Command>;

/// Handlers that change state talk to the controller; flow reads go
/// straight to the shared telemetry (they must not queue behind map writes).
#[derive(Clone)]
struct AppState {
    tx: Tx,
    tel: Arc<Telemetry>,
}

impl FromRef<AppState> for Tx {
    fn from_ref(s: &AppState) -> Tx {
        s.tx.clone()
    }
}

impl FromRef<AppState> for Arc<Telemetry> {
    fn from_ref(s: &AppState) -> Arc<Telemetry> {
        s.tel.clone()
    }
}

/// How many past flows `GET /v1/flows` returns when `last` is not given.
const DEFAULT_LAST: usize = 20;

fn bad_request(message: String) -> Response {
    ApiFailure(Failure {
        status: 400,
        kind: "bad_request",
        message,
    })
    .into_response()
}

fn ndjson_line(flow: &sluice_api::Flow) -> Bytes {
    let mut v = serde_json::to_vec(flow).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// `GET /v1/flows`: past flows as NDJSON; with `follow`, then live ones.
async fn flows(State(tel): State<Arc<Telemetry>>, Query(q): Query<FlowQuery>) -> Response {
    if let Some(r) = &q.drop_reason {
        if sluice_datapath::events::reason_code(r).is_none() {
            let known: Vec<&str> = sluice_datapath::events::DROP_REASONS
                .iter()
                .map(|(_, n)| *n)
                .collect();
            return bad_request(format!(
                "unknown drop reason {r:?}; known: {}",
                known.join(", ")
            ));
        }
    }
    let rx = q.follow.then(|| tel.subscribe());
    let (past, newest) = tel.recent(q.last.unwrap_or(DEFAULT_LAST), |f| q.matches(f));
    let mut head = Vec::new();
    for f in &past {
        head.extend_from_slice(&ndjson_line(&f.flow));
    }
    let Some(rx) = rx else {
        return ([("content-type", "application/x-ndjson")], head).into_response();
    };
    let live = futures_util::stream::unfold((rx, q), move |(mut rx, q)| async move {
        loop {
            match rx.recv().await {
                Ok(f) if f.seq > newest && q.matches(&f.flow) => {
                    return Some((Ok::<_, Infallible>(ndjson_line(&f.flow)), (rx, q)));
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "a flow follower is too slow; flows skipped for it"
                    );
                }
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let body = futures_util::stream::once(async move { Ok::<_, Infallible>(Bytes::from(head)) })
        .chain(live);
    (
        [("content-type", "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

async fn get_trace(State(tel): State<Arc<Telemetry>>) -> Json<TraceConfig> {
    Json(TraceConfig {
        per_packet: tel.trace_per_packet(),
    })
}

async fn put_trace(
    State(tel): State<Arc<Telemetry>>,
    Json(cfg): Json<TraceConfig>,
) -> Result<Json<TraceConfig>, ApiFailure> {
    tel.set_trace_per_packet(cfg.per_packet)
        .map_err(|message| {
            ApiFailure(Failure {
                status: 500,
                kind: "datapath",
                message,
            })
        })?;
    Ok(Json(cfg))
}

struct ApiFailure(Failure);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ApiError {
            kind: self.0.kind.to_string(),
            message: self.0.message,
        };
        (status, Json(body)).into_response()
    }
}

async fn ask<T: Serialize>(
    tx: &Tx,
    make: impl FnOnce(Reply<T>) -> Command,
) -> Result<Json<T>, ApiFailure> {
    let gone = || {
        ApiFailure(Failure {
            status: 503,
            kind: "shutting_down",
            message: "the agent is shutting down".into(),
        })
    };
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply)).await.map_err(|_| gone())?;
    match rx.await {
        Ok(Ok(v)) => Ok(Json(v)),
        Ok(Err(f)) => Err(ApiFailure(f)),
        Err(_) => Err(gone()),
    }
}

#[derive(Serialize)]
struct Empty {}

pub fn router(tx: Tx, tel: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/v1/flows", get(flows))
        .route("/v1/config/trace", get(get_trace).put(put_trace))
        .route(
            "/v1/status",
            get(|State(tx): State<Tx>| async move { ask(&tx, Command::Status).await }),
        )
        .route(
            "/v1/services",
            get(|State(tx): State<Tx>| async move { ask(&tx, Command::Services).await }),
        )
        .route(
            "/v1/endpoints",
            get(|State(tx): State<Tx>| async move { ask(&tx, Command::Endpoints).await }),
        )
        .route(
            "/v1/identities",
            get(|State(tx): State<Tx>| async move { ask(&tx, Command::Identities).await }),
        )
        .route(
            "/v1/policy/endpoints",
            get(|State(tx): State<Tx>| async move { ask(&tx, Command::PolicyEndpoints).await }),
        )
        .route(
            "/v1/policy/trace",
            post(
                |State(tx): State<Tx>, Json(req): Json<PolicyTraceRequest>| async move {
                    ask(&tx, |r| Command::PolicyTrace(req, r)).await
                },
            ),
        )
        .route(
            "/v1/ipam/allocate",
            post(
                |State(tx): State<Tx>, Json(req): Json<IpamRequest>| async move {
                    ask(&tx, |r| Command::Allocate(req, r)).await
                },
            ),
        )
        .route(
            "/v1/ipam/release",
            post(
                |State(tx): State<Tx>, Json(req): Json<IpamRelease>| async move {
                    ask(&tx, |r| Command::Release(req.container_id, r))
                        .await
                        .map(|_| Json(Empty {}))
                },
            ),
        )
        .route(
            "/v1/endpoints/{id}",
            put(
                |State(tx): State<Tx>,
                 Path(id): Path<String>,
                 Json(reg): Json<EndpointRegistration>| async move {
                    ask(&tx, |r| Command::Register(id, reg, r)).await
                },
            )
            .delete(|State(tx): State<Tx>, Path(id): Path<String>| async move {
                ask(&tx, |r| Command::Unregister(id, r))
                    .await
                    .map(|_| Json(Empty {}))
            }),
        )
        .with_state(AppState { tx, tel })
}
