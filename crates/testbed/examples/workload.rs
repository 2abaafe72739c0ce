//! Stand-in for `sluice workload serve` so the testbed's own tests can run
//! workloads before the CLI wires the subcommand:
//! `workload workload serve --name NS/POD [--tcp P]... [--udp P]... [--http P] [--sctp P]...`.

use sluice_testbed::{serve_workload, WorkloadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = WorkloadOptions::default();
    let args: Vec<String> = std::env::args().skip(3).collect();
    for pair in args.chunks(2) {
        let [flag, value] = pair else {
            return Err(format!("flag {pair:?} lacks a value").into());
        };
        match flag.as_str() {
            "--name" => opts.name = value.clone(),
            "--tcp" => opts.tcp.push(value.parse()?),
            "--udp" => opts.udp.push(value.parse()?),
            "--sctp" => opts.sctp.push(value.parse()?),
            "--http" => opts.http = Some(value.parse()?),
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(serve_workload(opts))?;
    Ok(())
}
