//! kube-proxy baselines: what kube-proxy's iptables and nftables modes would
//! install for the Services Sluice compiled, rendered from the same
//! [`sluice_core::DesiredState`] and applied with the same tools kube-proxy
//! uses (`iptables-restore`, `nft -f`) in a given network namespace.
//!
//! Two users: `sluice bench`, which measures Sluice against these rules on
//! the same kernel, and `sluice baseline render`, which prints them.
//!
//! The rule shapes follow kube-proxy's public behaviour (chain layout,
//! naming convention, match order as `iptables-save` prints it); the code is
//! our own.

mod apply;
mod iptables;
mod names;
mod nftables;
mod views;

use std::fmt;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

pub use apply::{Baseline, Error, IptablesBackend};
pub use iptables::{probability, render_iptables};
pub use names::{ext_chain, hash_prefix, nft_endpoint_chain, nft_svc_base, sep_chain, svc_chain};
pub use nftables::render_nftables;
pub use views::{synthetic_views, views_from, EndpointView, ServicePortView};

/// Which kube-proxy mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Iptables,
    Nftables,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
        })
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "iptables" => Ok(Mode::Iptables),
            "nftables" => Ok(Mode::Nftables),
            other => Err(format!(
                "unknown mode {other:?} (expected iptables or nftables)"
            )),
        }
    }
}

/// kube-proxy settings that change the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--cluster-cidr`: traffic to a cluster IP from outside it is
    /// masqueraded. `None` drops that rule (kube-proxy without a CIDR).
    pub cluster_cidr: Option<Ipv4Net>,
    /// `--nodeport-addresses` (nftables mode's `nodeport-ips`). Empty means
    /// every local address, kube-proxy's default.
    pub node_ips: Vec<Ipv4Addr>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            // kubeadm's and flannel's default pod network.
            cluster_cidr: Some(Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16)),
            node_ips: Vec::new(),
        }
    }
}

/// Renders `views` in `mode`.
pub fn render(mode: Mode, views: &[ServicePortView], opts: &Options) -> String {
    match mode {
        Mode::Iptables => render_iptables(views, opts),
        Mode::Nftables => render_nftables(views, opts),
    }
}

/// Size of a mode's ruleset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleStats {
    /// kube-proxy's own chains (iptables: both tables; built-in chains not counted).
    pub chains: usize,
    /// Rules, including the jumps from built-in chains (iptables).
    pub rules: usize,
    /// nftables set and map elements (0 for iptables).
    pub elements: usize,
}

/// Detailed counts for `views` in `mode` with `opts`.
pub fn rule_stats(mode: Mode, views: &[ServicePortView], opts: &Options) -> RuleStats {
    match mode {
        Mode::Iptables => {
            let filter = iptables::filter_chains(views);
            let nat = iptables::all_nat_chains(views, opts);
            let chains = filter.len() + nat.len();
            let rules = filter
                .iter()
                .chain(&nat)
                .map(|c| c.rules.len())
                .sum::<usize>()
                + iptables::JUMPS.len();
            RuleStats {
                chains,
                rules,
                elements: 0,
            }
        }
        Mode::Nftables => {
            let (chains, rules, elements) = nftables::counts(views, opts);
            RuleStats {
                chains,
                rules,
                elements,
            }
        }
    }
}

/// Objects the kernel holds for `views` (default options): rules, plus map
/// elements in nftables mode. What `sluice bench` reports next to Sluice's
/// map entries.
pub fn rule_count(mode: Mode, views: &[ServicePortView]) -> usize {
    let s = rule_stats(mode, views, &Options::default());
    s.rules + s.elements
}
