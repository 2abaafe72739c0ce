use crate::types::ApiError;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use tokio::net::UnixStream;

/// Where the agent listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sluice/sluice.sock";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path}: {source} (is `sluice agent` running?)")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP error talking to the agent: {0}")]
    Http(#[from] hyper::Error),
    #[error("cannot build request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("cannot encode or decode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("agent answered {status}: {} ({})", .error.message, .error.kind)]
    Api { status: u16, error: ApiError },
}

/// One request per connection: the agent's API is low-volume and this keeps
/// the client free of connection-pool state.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Self {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// GETs a newline-delimited JSON stream (`/v1/flows?follow=true`) and
    /// calls `on_item` for each object as it arrives, until the agent closes
    /// the stream or `on_item` returns `false`.
    pub async fn get_stream<T: DeserializeOwned>(
        &self,
        path: &str,
        mut on_item: impl FnMut(T) -> bool,
    ) -> Result<(), ClientError> {
        let resp = self.send(Method::GET, path, Vec::new()).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body.collect().await?.to_bytes();
            return Err(api_error(status, &bytes));
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            let Some(data) = frame.data_ref() else {
                continue;
            };
            buf.extend_from_slice(data);
            // Objects may be split across frames: handle whole lines only.
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if !on_item(serde_json::from_slice(line)?) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let payload = match body {
            Some(b) => serde_json::to_vec(b)?,
            None => Vec::new(),
        };
        let resp = self.send(method, path, payload).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if status.is_success() {
            Ok(serde_json::from_slice(&bytes)?)
        } else {
            Err(api_error(status, &bytes))
        }
    }

    /// One request on a fresh connection.
    async fn send(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection task ends when the request is done and `sender` drops.
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "sluice")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))?;
        Ok(sender.send_request(req).await?)
    }
}

/// A non-2xx answer: the agent's [`ApiError`] body, or the raw text.
fn api_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    let error = serde_json::from_slice::<ApiError>(bytes).unwrap_or_else(|_| ApiError {
        kind: "http".into(),
        message: String::from_utf8_lossy(bytes).into_owned(),
    });
    ClientError::Api {
        status: status.as_u16(),
        error,
    }
}

impl ClientError {
    /// True when the agent answered with this status code.
    pub fn is_status(&self, code: StatusCode) -> bool {
        matches!(self, ClientError::Api { status, .. } if *status == code.as_u16())
    }
}
