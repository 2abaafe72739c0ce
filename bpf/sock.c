/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * cgroup v2 socket hooks of the pod processes: socket-level load balancing
 * (lib/sock.h). One object, four attach points on the same cgroup.
 *  - connect4: TCP and connected UDP get their backend once, at connect();
 *  - sendmsg4: unconnected UDP, per datagram;
 *  - recvmsg4: UDP replies come from the Service address again;
 *  - getpeername4: a connected socket's peer is the Service address.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/sock.h"

SEC("cgroup/connect4")
int sluice_sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock_verdict_ret(sock_forward(ctx));
}

SEC("cgroup/sendmsg4")
int sluice_sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_verdict_ret(sock_forward(ctx));
}

/* recvmsg4 and getpeername4 must return 1: they can only rewrite. */
SEC("cgroup/recvmsg4")
int sluice_sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	sock_reverse(ctx);
	return 1;
}

SEC("cgroup/getpeername4")
int sluice_sock_getpeername4(struct bpf_sock_addr *ctx)
{
	sock_reverse(ctx);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
