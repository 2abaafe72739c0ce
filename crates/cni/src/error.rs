//! CNI error codes and the error JSON the runtime reads from stdout.
//!
//! Codes 1–99 are the spec's; 100 and up are Sluice's own:
//!
//! | code | meaning |
//! |------|---------|
//! | 100  | no free IP in the node's pod CIDR (agent IPAM exhausted) |
//! | 101  | the network namespace in `CNI_NETNS` does not exist |
//! | 102  | the agent rejected the endpoint registration |
//! | 103  | setting up or tearing down the pod's interfaces/routes failed |
//! | 104  | the agent answered with an unexpected error |
//! | 105  | CHECK found the pod's networking not as ADD left it |

use serde::Serialize;

/// Error codes from the CNI spec plus Sluice's plugin-specific ones (≥100).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    IncompatibleVersion = 1,
    InvalidEnv = 4,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    PluginNotAvailable = 50,
    NoFreeIp = 100,
    NetnsMissing = 101,
    EndpointRejected = 102,
    NetworkSetup = 103,
    AgentError = 104,
    CheckFailed = 105,
}

impl ErrorCode {
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}

/// An error the plugin reports to the runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    pub details: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The spec's error object, for stdout.
    pub fn to_json(&self, cni_version: &str) -> String {
        let body = ErrorJson {
            cni_version,
            code: self.code.as_u32(),
            msg: &self.msg,
            details: &self.details,
        };
        // Serializing a struct of strings and a number cannot fail; fall back
        // to a hand-written object rather than panic anyway.
        serde_json::to_string(&body).unwrap_or_else(|_| {
            format!(
                "{{\"cniVersion\":\"{cni_version}\",\"code\":{},\"msg\":\"internal error\"}}",
                self.code.as_u32()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_spec_fields() {
        let e = CniError::new(ErrorCode::TryAgainLater, "agent down").with_details("refused");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.1.0")).unwrap_or_default();
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "agent down");
        assert_eq!(v["details"], "refused");
    }

    #[test]
    fn empty_details_are_omitted() {
        let e = CniError::new(ErrorCode::NoFreeIp, "full");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap_or_default();
        assert_eq!(v["code"], 100);
        assert!(v.get("details").is_none());
    }
}
