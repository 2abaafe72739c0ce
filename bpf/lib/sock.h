/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Socket-level load balancing (cgroup sock_addr hooks): the backend is
 * chosen once, when a socket connects (or per datagram for unconnected UDP),
 * by rewriting the address the application passed. Every packet after that
 * is addressed to the backend pod itself, so the tc programs find no
 * frontend and translate nothing: pod-to-Service costs what pod-to-pod does.
 *
 * What the application sees stays the Service: sl_sock_revnat remembers, per
 * (socket, backend), the frontend it asked for, and getpeername() / the
 * source address of UDP replies get it back.
 */
#ifndef SLUICE_LIB_SOCK_H
#define SLUICE_LIB_SOCK_H

#include "maps.h"
#include "lb_select.h"
#include "metrics.h"

/* <errno.h> is libc's; this is the kernel's value for every architecture we build for. */
#define SOCK_ECONNREFUSED 111
#define SOCK_ETIMEDOUT 110

/* LRU: a socket closed without us hearing of it simply ages out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct sock_revnat_key);
	__type(value, struct sock_revnat_entry);
	__uint(max_entries, SLUICE_SOCK_REVNAT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sock_revnat SEC(".maps");

/*
 * Network namespace cookies of pods that opted out (annotation
 * sluice.io/socket-lb: "false"): their traffic keeps the Service address on
 * the wire and is translated per packet by tc, as a sidecar mesh needs.
 * Written by the agent only.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u8);
	__uint(max_entries, SLUICE_SOCK_OPTOUT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_sock_optout SEC(".maps");

enum sock_verdict {
	SOCK_PASS = 0,	  /* not a Service (or opted out): leave the address alone */
	SOCK_XLATED,	  /* address rewritten to a backend */
	SOCK_REFUSED,	  /* a Service without endpoints: fail the call */
	SOCK_DROPPED,	  /* the node's own call where tc would drop: fail it as timed out */
};

static __always_inline int sock_l4_proto(const struct bpf_sock_addr *ctx, __u8 *proto)
{
	if (ctx->protocol == IPPROTO_TCP || ctx->protocol == IPPROTO_UDP) {
		*proto = ctx->protocol;
		return 1;
	}
	return 0;
}

/**
 * sock_forward() - give a connect()/sendmsg() to a Service a backend.
 *
 * Selection is lb_select(), as on the tc path. Pods get their ClusterIP
 * connections translated here; their NodePort, LB IP and externalIP
 * connections keep the tc path, which masquerades them as kube-proxy does.
 * The node's own sockets (the agent's netns) also get NodePorts (on the
 * NodePort addresses), LB IPs and externalIPs translated: a host packet to
 * its own address never crosses a tc hook. Their source is the node
 * address, so they are "masqueraded" by nature and use the cluster-wide
 * backends; loadBalancerSourceRanges are checked with the node IP.
 */
static __always_inline int sock_forward(struct bpf_sock_addr *ctx)
{
	struct sock_revnat_key rkey = {};
	struct sock_revnat_entry rval = {};
	struct lb_service *svc;
	struct lb_backend *backend;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u32 backend_id = 0;
	__u64 netns, client;
	__be32 lookup_addr = addr;
	__u8 proto;
	int host;

	if (addr == 0 || !sock_l4_proto(ctx, &proto))
		return SOCK_PASS;
	netns = bpf_get_netns_cookie(ctx);
	host = netcfg.host_netns_cookie && netns == netcfg.host_netns_cookie;
	if (host)
		svc = lb_lookup_frontend(addr, port, proto, &lookup_addr);
	else
		svc = lb_lookup(addr, port, proto);
	if (!svc)
		return SOCK_PASS;
	if (!host && (svc->flags & LB_FLAG_EXTERNAL))
		return SOCK_PASS;
	/*
	 * Where the tc path would drop (a source range, iTP Local with no
	 * local endpoint), a pod's packet still meets it; the node's own
	 * packets never cross a tc hook and would leave untranslated, so the
	 * call fails here instead.
	 */
	if (host && !lb_source_allowed(svc, netcfg.node_ip)) {
		metric_inc(METRIC_SOCK_NO_BACKEND);
		return SOCK_DROPPED;
	}
	if (bpf_map_lookup_elem(&sl_sock_optout, &netns))
		return SOCK_PASS;
	if (svc->count == 0) {
		/* Dropped, not refused: the tc path drops (and reports) it. */
		if (svc->flags & LB_FLAG_DROP_NO_BACKEND) {
			if (!host)
				return SOCK_PASS;
			metric_inc(METRIC_SOCK_NO_BACKEND);
			return SOCK_DROPPED;
		}
		metric_inc(METRIC_SOCK_NO_BACKEND);
		return SOCK_REFUSED;
	}
	/* The pod is its network namespace: connect() may not know its
	 * source address yet, the namespace is known. */
	/* No source port yet at connect(): Maglev hashes the socket, so a
	 * pod's connections spread like flows do (a local socket needs no
	 * agreement between nodes). Affinity names the pod's namespace. */
	client = AFFINITY_CLIENT_NETNS | bpf_get_netns_cookie(ctx);
	backend = lb_select(svc, lookup_addr, port, proto, LB_SCOPE_ALL, client,
			    lb_flow_hash(bpf_get_socket_cookie(ctx),
					 ((__u64)addr << 24) | ((__u64)port << 8) | proto),
			    &backend_id);
	if (!backend) {
		/* Inconsistent maps: leave it to tc, which counts and drops it. */
		metric_inc(METRIC_DROP_INCONSISTENT_SLOT);
		return SOCK_PASS;
	}
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = backend->address;
	rkey.port = backend->port;
	rval.address = addr;
	rval.port = port;
	rval.rev_nat_id = svc->rev_nat_id;
	rval.backend_id = backend_id;
	/*
	 * Failure only loses the VIP in getpeername()/recvmsg(): the
	 * connection itself works, so it is not a reason to refuse it.
	 */
	bpf_map_update_elem(&sl_sock_revnat, &rkey, &rval, BPF_ANY);
	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
	metric_inc(METRIC_SOCK_XLATE);
	return SOCK_XLATED;
}

/**
 * sock_reverse() - show the frontend instead of the backend a socket was
 * given (getpeername(), source of a received UDP datagram).
 */
static __always_inline void sock_reverse(struct bpf_sock_addr *ctx)
{
	struct sock_revnat_key rkey = {};
	struct sock_revnat_entry *rval;
	__u8 proto;

	if (!sock_l4_proto(ctx, &proto))
		return;
	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&sl_sock_revnat, &rkey);
	if (!rval)
		return;
	ctx->user_ip4 = rval->address;
	ctx->user_port = rval->port;
	metric_inc(METRIC_SOCK_REVNAT);
}

/*
 * sock_verdict_ret() - the hook's return value: a refusal fails the call
 * with ECONNREFUSED, a drop with ETIMEDOUT at once (what the caller would
 * get after its SYN retries; a datagram fails instead of vanishing).
 */
static __always_inline int sock_verdict_ret(int verdict)
{
	if (verdict == SOCK_REFUSED) {
		/* Return 0 alone would be EPERM; kube-proxy semantics is "refused". */
		bpf_set_retval(-SOCK_ECONNREFUSED);
		return 0;
	}
	if (verdict == SOCK_DROPPED) {
		bpf_set_retval(-SOCK_ETIMEDOUT);
		return 0;
	}
	return 1;
}

#endif /* SLUICE_LIB_SOCK_H */
