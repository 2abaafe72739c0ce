//! `sluice-cni`: a CNI 1.x plugin that wires a pod's network namespace to
//! the node (veth, /32 address, link-local gateway) and registers the pod
//! with the Sluice agent, which attaches the datapath to the host veth.
//!
//! See [`error`] for the plugin-specific error codes.

mod agent;
pub mod config;
pub mod env;
pub mod error;
pub mod netlink;
pub mod plugin;
pub mod result;

use config::LATEST_VERSION;
use env::{CniEnv, Command};
pub use error::{CniError, ErrorCode};
use std::collections::HashMap;

/// What to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub exit_code: i32,
}

/// Runs one invocation: `vars` is the process environment, `stdin` the
/// network configuration.
pub fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Outcome {
    // Errors are written in the version the caller speaks, when we can tell.
    let version = config::sniff_version(stdin).unwrap_or_else(|| LATEST_VERSION.to_string());
    match dispatch(vars, stdin) {
        Ok(stdout) => Outcome {
            stdout,
            exit_code: 0,
        },
        Err(e) => {
            tracing::error!(code = e.code.as_u32(), msg = %e.msg, details = %e.details, "sluice-cni failed");
            Outcome {
                stdout: e.to_json(&version),
                exit_code: 1,
            }
        }
    }
}

fn dispatch(vars: &HashMap<String, String>, stdin: &[u8]) -> Result<String, CniError> {
    let command = CniEnv::command(vars)?;
    if command == Command::Version {
        // VERSION must answer even without a (valid) config.
        let v = config::sniff_version(stdin).unwrap_or_else(|| LATEST_VERSION.to_string());
        return Ok(plugin::version_json(&v));
    }
    let conf = config::parse(stdin)?;
    let env = CniEnv::from_vars(vars)?;
    match command {
        Command::Add => {
            let res = plugin::add(&env, &conf)?;
            serde_json::to_string(&res).map_err(|e| {
                CniError::new(ErrorCode::AgentError, "cannot encode the result")
                    .with_details(e.to_string())
            })
        }
        Command::Del => plugin::del(&env, &conf).map(|()| String::new()),
        Command::Check => plugin::check(&env, &conf).map(|()| String::new()),
        Command::Status => plugin::status(&conf).map(|()| String::new()),
        // Stale attachments are the agent's to collect (it knows every
        // endpoint); nothing for the plugin to do.
        Command::Gc => Ok(String::new()),
        Command::Version => Ok(plugin::version_json(&conf.cni_version)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn code(o: &Outcome) -> u64 {
        let v: serde_json::Value = serde_json::from_str(&o.stdout).expect("json");
        v["code"].as_u64().unwrap_or(0)
    }

    const CONF: &[u8] = br#"{"cniVersion":"1.0.0","name":"sluice","type":"sluice-cni"}"#;

    #[test]
    fn version_without_config() {
        let o = run(&vars(&[("CNI_COMMAND", "VERSION")]), b"");
        assert_eq!(o.exit_code, 0);
        assert!(o.stdout.contains("supportedVersions"));
    }

    #[test]
    fn error_codes_from_run() {
        let o = run(&vars(&[]), CONF);
        assert_eq!((o.exit_code, code(&o)), (1, 4));
        let o = run(&vars(&[("CNI_COMMAND", "ADD")]), b"{{{");
        assert_eq!(code(&o), 6);
        let o = run(
            &vars(&[("CNI_COMMAND", "ADD")]),
            br#"{"cniVersion":"0.2.0","name":"x"}"#,
        );
        assert_eq!(code(&o), 1);
        let o = run(&vars(&[("CNI_COMMAND", "ADD")]), CONF);
        assert_eq!(code(&o), 4);
        let o = run(
            &vars(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/nonexistent/slc-netns"),
                ("CNI_IFNAME", "eth0"),
            ]),
            CONF,
        );
        assert_eq!(code(&o), 101);
    }

    #[test]
    fn errors_speak_callers_version() {
        let o = run(&vars(&[("CNI_COMMAND", "ADD")]), CONF);
        assert!(o.stdout.contains("\"cniVersion\":\"1.0.0\""));
    }
}
