#!/usr/bin/env bash
# Installs what building and running Sluice needs on a fresh Debian machine
# (as root), and mounts bpffs. Safe to run again: it skips what is there.
set -euo pipefail

need_pkgs=()
command -v clang-19 >/dev/null 2>&1 || need_pkgs+=(clang-19 llvm-19)
[ -f /usr/include/bpf/bpf_helpers.h ] || need_pkgs+=(libbpf-dev)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v ethtool >/dev/null 2>&1 || need_pkgs+=(ethtool)
# The kube-proxy baselines of `sluice bench` apply rules with these.
command -v iptables-restore >/dev/null 2>&1 || need_pkgs+=(iptables)
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: need root to install: ${need_pkgs[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The agent mounts bpffs itself when it is missing; mounting here too keeps
# tests that load programs directly (packet tests) independent of it.
if [ "$(id -u)" -eq 0 ] && ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
    echo "setup: mounted bpffs at /sys/fs/bpf"
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found (install Rust)" >&2; exit 1; }
echo "setup: ok (clang: $(clang-19 --version | head -1))"
