//! The CNI_* environment variables the runtime passes.

use crate::error::{CniError, ErrorCode};
use std::collections::HashMap;
use std::path::PathBuf;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        match s {
            "ADD" => Ok(Self::Add),
            "DEL" => Ok(Self::Del),
            "CHECK" => Ok(Self::Check),
            "VERSION" => Ok(Self::Version),
            "STATUS" => Ok(Self::Status),
            "GC" => Ok(Self::Gc),
            other => Err(CniError::new(
                ErrorCode::InvalidEnv,
                format!(
                    "CNI_COMMAND={other:?} is not a CNI command (expected ADD, DEL, CHECK, VERSION, STATUS or GC)"
                ),
            )),
        }
    }
}

/// `CNI_ARGS`: `K=V;K=V` pairs (the runtime adds K8S_POD_NAMESPACE etc.).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(CniError::new(
                    ErrorCode::InvalidEnv,
                    format!("CNI_ARGS entry {part:?} is not KEY=VALUE"),
                ));
            };
            pairs.push((k.to_string(), v.to_string()));
        }
        Ok(Self { pairs })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// The environment of one invocation. Fields a command does not need may be
/// absent; the `require_*` accessors report the missing variable by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    pub args: CniArgs,
}

fn non_empty(vars: &HashMap<String, String>, key: &str) -> Option<String> {
    vars.get(key).filter(|v| !v.is_empty()).cloned()
}

fn missing(var: &str, what: &str) -> CniError {
    CniError::new(
        ErrorCode::InvalidEnv,
        format!("{var} is not set: the runtime must pass {what}"),
    )
}

impl CniEnv {
    /// Reads `CNI_COMMAND` only: VERSION must work with nothing else set.
    pub fn command(vars: &HashMap<String, String>) -> Result<Command, CniError> {
        let cmd = non_empty(vars, "CNI_COMMAND")
            .ok_or_else(|| missing("CNI_COMMAND", "the operation (ADD, DEL, CHECK, ...)"))?;
        Command::parse(&cmd)
    }

    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Self, CniError> {
        let command = Self::command(vars)?;
        let args = match vars.get("CNI_ARGS") {
            Some(a) => CniArgs::parse(a)?,
            None => CniArgs::default(),
        };
        Ok(Self {
            command,
            container_id: non_empty(vars, "CNI_CONTAINERID"),
            netns: non_empty(vars, "CNI_NETNS").map(PathBuf::from),
            ifname: non_empty(vars, "CNI_IFNAME"),
            args,
        })
    }

    pub fn require_container_id(&self) -> Result<&str, CniError> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| missing("CNI_CONTAINERID", "the container id"))?;
        validate_container_id(id)?;
        Ok(id)
    }

    pub fn require_netns(&self) -> Result<&std::path::Path, CniError> {
        self.netns
            .as_deref()
            .ok_or_else(|| missing("CNI_NETNS", "the path of the pod's network namespace"))
    }

    pub fn require_ifname(&self) -> Result<&str, CniError> {
        let name = self
            .ifname
            .as_deref()
            .ok_or_else(|| missing("CNI_IFNAME", "the interface name to create in the pod"))?;
        validate_ifname(name)?;
        Ok(name)
    }

    /// `IP=<ipv4>` in CNI_ARGS (the host-local plugin's convention, a
    /// `/prefix` is tolerated and ignored): the pod wants exactly that
    /// address. Anything else is an invalid environment, not ignored.
    pub fn requested_ip(&self) -> Result<Option<std::net::Ipv4Addr>, CniError> {
        let Some(v) = self.args.get("IP") else {
            return Ok(None);
        };
        let addr = v.split('/').next().unwrap_or(v).trim();
        addr.parse().map(Some).map_err(|_| {
            CniError::new(
                ErrorCode::InvalidEnv,
                format!("CNI_ARGS IP={v:?} is not an IPv4 address"),
            )
        })
    }

    /// Namespace and name of the pod, from CNI_ARGS. Runtimes outside
    /// Kubernetes do not pass them; the container id then names the pod so
    /// the agent still gets a stable identity.
    pub fn pod_identity(&self, container_id: &str) -> (String, String) {
        let ns = self.args.get("K8S_POD_NAMESPACE").unwrap_or("default");
        let name = self
            .args
            .get("K8S_POD_NAME")
            .map(str::to_string)
            .unwrap_or_else(|| container_id.chars().take(12).collect());
        (ns.to_string(), name)
    }
}

/// The spec allows alphanumerics, `_`, `.` and `-`; we also put the id in a
/// URL path, so anything else is refused here rather than escaped.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let ok_start = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok_start && ok_chars {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::InvalidEnv,
            format!("CNI_CONTAINERID={id:?} is invalid: use letters, digits, '_', '.' and '-', starting with a letter or digit"),
        ))
    }
}

pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad_char = name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if name.len() > MAX_IFNAME_LEN || bad_char || name == "." || name == ".." {
        return Err(CniError::new(
            ErrorCode::InvalidEnv,
            format!("CNI_IFNAME={name:?} is not a valid interface name (at most {MAX_IFNAME_LEN} characters, no '/', ':' or spaces)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_full_env() {
        let env = CniEnv::from_vars(&vars(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123",
            ),
        ]))
        .expect("valid env");
        assert_eq!(env.command, Command::Add);
        assert_eq!(env.require_container_id().ok(), Some("abc123"));
        assert_eq!(env.require_ifname().ok(), Some("eth0"));
        assert_eq!(
            env.pod_identity("abc123"),
            ("shop".to_string(), "web-0".to_string())
        );
    }

    #[test]
    fn missing_vars_are_code_4_and_named() {
        let err = CniEnv::command(&vars(&[])).expect_err("no command");
        assert_eq!(err.code, ErrorCode::InvalidEnv);
        assert!(err.msg.contains("CNI_COMMAND"));
        let env = CniEnv::from_vars(&vars(&[("CNI_COMMAND", "ADD")])).expect("command only");
        let err = env.require_container_id().expect_err("no id");
        assert!(err.msg.contains("CNI_CONTAINERID"));
        assert_eq!(
            env.require_netns().expect_err("no netns").code,
            ErrorCode::InvalidEnv
        );
    }

    #[test]
    fn unknown_command_is_code_4() {
        assert_eq!(
            Command::parse("FROB").expect_err("bad").code,
            ErrorCode::InvalidEnv
        );
    }

    #[test]
    fn bad_args_and_ids() {
        assert!(CniArgs::parse("A=1;;B=2;").is_ok());
        assert!(CniArgs::parse("novalue").is_err());
        assert!(validate_container_id("../etc").is_err());
        assert!(validate_container_id("a/b").is_err());
        assert!(validate_container_id("").is_err());
        assert!(validate_container_id("k8s_pause.1-x").is_ok());
        assert!(validate_ifname("eth0").is_ok());
        assert!(validate_ifname("a-very-long-ifname").is_err());
        assert!(validate_ifname("a/b").is_err());
    }

    #[test]
    fn requested_ip_from_cni_args() {
        let env = |args: &str| {
            CniEnv::from_vars(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_ARGS", args)])).expect("env")
        };
        assert_eq!(
            env("IgnoreUnknown=1;IP=10.180.0.2").requested_ip().ok(),
            Some(Some(std::net::Ipv4Addr::new(10, 180, 0, 2)))
        );
        assert_eq!(
            env("IP=10.180.0.2/32").requested_ip().ok(),
            Some(Some(std::net::Ipv4Addr::new(10, 180, 0, 2)))
        );
        assert_eq!(env("K8S_POD_NAME=a").requested_ip().ok(), Some(None));
        let err = env("IP=fd00::1").requested_ip().expect_err("not v4");
        assert_eq!(err.code, ErrorCode::InvalidEnv);
        assert!(err.msg.contains("fd00::1"), "{}", err.msg);
    }

    #[test]
    fn identity_falls_back_to_container_id() {
        let env = CniEnv::from_vars(&vars(&[("CNI_COMMAND", "ADD")])).expect("env");
        let (ns, name) = env.pod_identity("0123456789abcdef");
        assert_eq!(ns, "default");
        assert_eq!(name, "0123456789ab");
    }
}
