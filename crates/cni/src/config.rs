//! The network configuration JSON on stdin.

use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use serde::Deserialize;
use std::path::PathBuf;

/// CNI spec versions whose config and result formats this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];
/// Used for output when the config could not tell us which version to speak.
pub const LATEST_VERSION: &str = "1.1.0";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConf {
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    agent_socket: Option<PathBuf>,
    prev_result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    pub agent_socket: PathBuf,
    pub prev_result: Option<CniResult>,
}

/// Best effort: the version to write error JSON in, even when the rest of the
/// config is bad.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(stdin).ok()?;
    let ver = v.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&ver).then(|| ver.to_string())
}

pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let raw: RawConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::Decode,
            "cannot decode the network configuration on stdin as JSON",
        )
        .with_details(e.to_string())
    })?;
    let cni_version = raw.cni_version.filter(|v| !v.is_empty()).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "network configuration has no \"cniVersion\"",
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "CNI version {cni_version} is not supported by sluice-cni (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let name = raw.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        CniError::new(
            ErrorCode::InvalidConfig,
            "network configuration has no \"name\"",
        )
    })?;
    let prev_result = match raw.prev_result {
        Some(v) => Some(serde_json::from_value(v).map_err(|e| {
            CniError::new(ErrorCode::Decode, "cannot decode \"prevResult\"")
                .with_details(e.to_string())
        })?),
        None => None,
    };
    Ok(NetConf {
        cni_version,
        name,
        plugin_type: raw.plugin_type.unwrap_or_default(),
        agent_socket: raw
            .agent_socket
            .unwrap_or_else(|| PathBuf::from(sluice_api::DEFAULT_SOCKET)),
        prev_result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_defaults_socket() {
        let c =
            parse(br#"{"cniVersion":"1.0.0","name":"sluice","type":"sluice-cni"}"#).expect("valid");
        assert_eq!(c.agent_socket, PathBuf::from("/run/sluice/sluice.sock"));
        assert!(c.prev_result.is_none());
    }

    #[test]
    fn unknown_fields_are_ignored_and_socket_read() {
        let c = parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"sluice-cni","agentSocket":"/tmp/a.sock","runtimeConfig":{},"ipam":{}}"#,
        )
        .expect("valid");
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/a.sock"));
    }

    #[test]
    fn error_codes() {
        assert_eq!(parse(b"not json").expect_err("x").code, ErrorCode::Decode);
        assert_eq!(
            parse(br#"{"cniVersion":"0.3.1","name":"n"}"#)
                .expect_err("x")
                .code,
            ErrorCode::IncompatibleVersion
        );
        assert_eq!(
            parse(br#"{"name":"n"}"#).expect_err("x").code,
            ErrorCode::InvalidConfig
        );
        assert_eq!(
            parse(br#"{"cniVersion":"1.0.0"}"#).expect_err("x").code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn prev_result_is_parsed() {
        let c = parse(br#"{"cniVersion":"1.0.0","name":"n","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/32"}]}}"#).expect("valid");
        assert_eq!(
            c.prev_result.and_then(|r| r.first_ip()),
            Some(std::net::Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn sniffs_only_supported_versions() {
        assert_eq!(
            sniff_version(br#"{"cniVersion":"1.0.0"}"#).as_deref(),
            Some("1.0.0")
        );
        assert_eq!(sniff_version(br#"{"cniVersion":"9"}"#), None);
        assert_eq!(sniff_version(b"junk"), None);
    }
}
