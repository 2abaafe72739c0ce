//! The HTTP/JSON API on a unix socket (routes listed in `sluice_api`).
//! Handlers only translate HTTP to [`Command`]s for the controller.

use crate::controller::{Command, Failure, Reply};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use sluice_api::{ApiError, EndpointRegistration, IpamRelease, IpamRequest};
use tokio::sync::{mpsc, oneshot};

type Tx = mpsc::Sender<Command>;

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

pub fn router(tx: Tx) -> Router {
    Router::new()
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
        .with_state(tx)
}
