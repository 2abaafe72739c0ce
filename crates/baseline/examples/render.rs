//! Prints kube-proxy's rules for N synthetic Services:
//! `cargo run -p sluice-baseline --example render -- iptables 1000 2`.

use sluice_baseline::{render, synthetic_views, Mode, Options};

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let mode: Mode = args.next().unwrap_or_else(|| "iptables".into()).parse()?;
    let n: usize = args
        .next()
        .map_or(Ok(100), |s| s.parse())
        .map_err(|e| format!("services: {e}"))?;
    let eps: usize = args
        .next()
        .map_or(Ok(2), |s| s.parse())
        .map_err(|e| format!("endpoints: {e}"))?;
    print!(
        "{}",
        render(mode, &synthetic_views(n, eps), &Options::default())
    );
    Ok(())
}
