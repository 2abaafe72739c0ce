//! Entry point: environment + stdin in, result or error JSON out.

use std::io::{Read, Write};

fn main() {
    // stdout belongs to the CNI protocol; logs go to stderr, which runtimes
    // capture into their own logs.
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_CNI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        tracing::warn!(error = %e, "cannot read stdin");
    }
    // vars_os: a non-UTF-8 variable elsewhere in the environment must not
    // panic the plugin.
    let vars = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let outcome = sluice_cni::run(&vars, &stdin);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    std::process::exit(outcome.exit_code);
}
