//! Compiles the kernel programs in `bpf/` with clang and generates the Rust
//! view of the shared map layouts (`bpf/include/sluice_maps.h`) with bindgen.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One object per attach point; each is embedded into the binary.
const PROGRAMS: &[&str] = &["from_pod", "to_pod", "nodeport", "sock"];

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let bpf_dir = manifest.join("../../bpf");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    println!("cargo:rerun-if-env-changed=SLUICE_CLANG");

    let clang = find_clang();
    for prog in PROGRAMS {
        compile(&clang, &bpf_dir, prog, &out.join(format!("{prog}.o")));
    }
    generate_bindings(&bpf_dir.join("include/sluice_maps.h"), &out.join("maps.rs"));
}

fn find_clang() -> String {
    if let Ok(c) = env::var("SLUICE_CLANG") {
        return c;
    }
    for candidate in ["clang-19", "clang"] {
        if Command::new(candidate).arg("--version").output().is_ok() {
            return candidate.to_string();
        }
    }
    panic!("clang not found: run `scripts/setup.sh` (installs clang-19 and libbpf-dev) or set SLUICE_CLANG");
}

fn compile(clang: &str, bpf_dir: &Path, prog: &str, out: &Path) {
    let src = bpf_dir.join(format!("{prog}.c"));
    let status = Command::new(clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Werror",
        ])
        .arg(format!("-I{}", bpf_dir.join("include").display()))
        // Without the multiarch dir clang stops at <asm/types.h>.
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg("-c")
        .arg(&src)
        .arg("-o")
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang}: {e}"));
    assert!(status.success(), "clang failed on {}", src.display());
}

fn generate_bindings(header: &Path, out: &Path) {
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg("-I/usr/include/x86_64-linux-gnu")
        .allowlist_type(
            "lb_.*|ct_.*|sluice_.*|sock_revnat_.*|ipcache_.*|endpoint_info|policy_.*|pol_ct_.*|affinity_.*|maglev_.*|node_addr_.*|src_range_.*",
        )
        .allowlist_var("SLUICE_.*|LB_FLAG_.*|LB_SCOPE_.*|CT_.*|EP_F_.*|POLICY_.*|AFFINITY_.*|MAGLEV_.*|NODE_ADDR_F_.*")
        .derive_default(true)
        .derive_debug(true)
        .derive_eq(true)
        .derive_hash(true)
        .use_core()
        .layout_tests(true)
        .rustified_enum("sluice_metric")
        // Codes that arrive from the kernel as plain integers: constants
        // (`sluice_drop_reason::SLUICE_REASON_*`) that can be matched on.
        .constified_enum_module("sluice_drop_reason|sluice_obs_point")
        .generate()
        .expect("bindgen failed on sluice_maps.h")
        .write_to_file(out)
        .expect("cannot write bindings");
}
