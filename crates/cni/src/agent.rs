//! Talking to the agent: the API client with a deadline and errors mapped to
//! CNI codes a runtime (and a person) can act on.

use crate::error::{CniError, ErrorCode};
use serde::de::DeserializeOwned;
use sluice_api::{
    Client, ClientError, EndpointInfo, EndpointRegistration, IpamAllocation, IpamRelease,
    IpamRequest, Status,
};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

/// A runtime gives a plugin tens of seconds at most; a stuck agent should
/// surface as "try again later", not as a hung pod start.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Agent {
    client: Client,
    rt: tokio::runtime::Runtime,
}

/// Which call failed, for messages and for picking the error code.
#[derive(Debug, Clone, Copy)]
enum Call {
    Allocate,
    Release,
    Register,
    Deregister,
    Status,
}

impl Call {
    fn what(self) -> &'static str {
        match self {
            Call::Allocate => "allocate an IP",
            Call::Release => "release the IP",
            Call::Register => "register the endpoint",
            Call::Deregister => "remove the endpoint",
            Call::Status => "get the agent status",
        }
    }
}

impl Agent {
    pub fn new(socket: &Path) -> Result<Self, CniError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                CniError::new(ErrorCode::AgentError, "cannot start the async runtime")
                    .with_details(e.to_string())
            })?;
        Ok(Self {
            client: Client::new(socket),
            rt,
        })
    }

    fn run<T, F>(&self, call: Call, fut: F) -> Result<T, CniError>
    where
        F: Future<Output = Result<T, ClientError>>,
    {
        // The timer must be created inside the runtime, hence the async block.
        match self
            .rt
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, fut).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(map_error(self.client.socket(), call, e)),
            Err(_) => Err(CniError::new(
                ErrorCode::TryAgainLater,
                format!(
                    "the Sluice agent at {} did not answer within {}s to {}",
                    self.client.socket().display(),
                    CALL_TIMEOUT.as_secs(),
                    call.what()
                ),
            )),
        }
    }

    fn get<T: DeserializeOwned>(&self, call: Call, path: &str) -> Result<T, CniError> {
        self.run(call, self.client.get(path))
    }

    pub fn allocate(&self, req: &IpamRequest) -> Result<IpamAllocation, CniError> {
        self.run(Call::Allocate, self.client.post("/v1/ipam/allocate", req))
    }

    pub fn release(&self, container_id: &str) -> Result<(), CniError> {
        let body = IpamRelease {
            container_id: container_id.to_string(),
        };
        self.run(
            Call::Release,
            self.client
                .post::<_, serde_json::Value>("/v1/ipam/release", &body),
        )
        .map(drop)
    }

    pub fn register(
        &self,
        container_id: &str,
        reg: &EndpointRegistration,
    ) -> Result<EndpointInfo, CniError> {
        let path = format!("/v1/endpoints/{container_id}");
        self.run(Call::Register, self.client.put(&path, reg))
    }

    pub fn deregister(&self, container_id: &str) -> Result<(), CniError> {
        let path = format!("/v1/endpoints/{container_id}");
        self.run(
            Call::Deregister,
            self.client.delete::<serde_json::Value>(&path),
        )
        .map(drop)
    }

    pub fn status(&self) -> Result<Status, CniError> {
        self.get(Call::Status, "/v1/status")
    }
}

fn map_error(socket: &Path, call: Call, e: ClientError) -> CniError {
    match e {
        ClientError::Connect { source, .. } => CniError::new(
            ErrorCode::TryAgainLater,
            format!(
                "cannot reach the Sluice agent at {}: {} — is `sluice agent` running?",
                socket.display(),
                source
            ),
        ),
        ClientError::Api { status, error } => {
            let code = match call {
                Call::Allocate if error.kind == "ipam_exhausted" => ErrorCode::NoFreeIp,
                Call::Register => ErrorCode::EndpointRejected,
                _ => ErrorCode::AgentError,
            };
            CniError::new(
                code,
                format!(
                    "the Sluice agent could not {}: {}",
                    call.what(),
                    error.message
                ),
            )
            .with_details(format!("HTTP {status}, kind {}", error.kind))
        }
        // The connection dropped mid-request: most likely the agent restarted.
        ClientError::Http(e) => CniError::new(
            ErrorCode::TryAgainLater,
            format!(
                "the connection to the Sluice agent at {} broke while trying to {}",
                socket.display(),
                call.what()
            ),
        )
        .with_details(e.to_string()),
        other => CniError::new(
            ErrorCode::AgentError,
            format!(
                "unexpected answer from the Sluice agent while trying to {}",
                call.what()
            ),
        )
        .with_details(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_api::ApiError;

    #[test]
    fn maps_connect_and_api_errors() {
        let sock = Path::new("/run/sluice/sluice.sock");
        let e = map_error(
            sock,
            Call::Allocate,
            ClientError::Connect {
                path: sock.into(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        );
        assert_eq!(e.code, ErrorCode::TryAgainLater);
        assert!(e.msg.contains("/run/sluice/sluice.sock"));
        assert!(e.msg.contains("sluice agent"));
        let api = |kind: &str| ClientError::Api {
            status: 409,
            error: ApiError {
                kind: kind.into(),
                message: "m".into(),
            },
        };
        assert_eq!(
            map_error(sock, Call::Allocate, api("ipam_exhausted")).code,
            ErrorCode::NoFreeIp
        );
        assert_eq!(
            map_error(sock, Call::Register, api("datapath")).code,
            ErrorCode::EndpointRejected
        );
        assert_eq!(
            map_error(sock, Call::Release, api("x")).code,
            ErrorCode::AgentError
        );
    }
}
