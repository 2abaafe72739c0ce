/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Every key and value the kernel programs and the agent share, defined once.
 *
 * The Rust side is generated from this file by bindgen (crates/datapath/build.rs),
 * so the two cannot drift. Rules that keep it that way:
 *  - fixed-width types only, addresses and ports in network byte order;
 *  - explicit padding fields, so no struct has holes the compiler fills
 *    with garbage (hash-map keys are compared bytewise);
 *  - the size of every struct is asserted below.
 *
 * This header must stay includable from user space: no BPF helpers here.
 */
#ifndef SLUICE_MAPS_H
#define SLUICE_MAPS_H

#include <linux/types.h>

/* Pinned map names (the file names under the node's bpffs directory). */
#define SLUICE_MAP_SERVICES "sl_services"
#define SLUICE_MAP_BACKENDS "sl_backends"
#define SLUICE_MAP_REVNAT "sl_revnat"
#define SLUICE_MAP_CT "sl_ct"
#define SLUICE_MAP_METRICS "sl_metrics"

/* Default capacities; the agent may override them at load time. */
#define SLUICE_SERVICES_MAX 524288
#define SLUICE_BACKENDS_MAX 262144
#define SLUICE_REVNAT_MAX 262144
#define SLUICE_CT_MAX 262144

/*
 * Service map key. slot 0 is the "master" entry of a frontend (it carries the
 * backend count); slots 1..count each name one backend. Selecting a backend is
 * therefore: master lookup, pick a slot, slot lookup, backend lookup.
 */
struct lb_service_key {
	__be32 address; /* frontend IP; 0.0.0.0 = NodePort on every node address */
	__be16 port;	/* frontend port */
	__u8 proto;	/* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad0;
	__u16 slot;	/* 0 = master, 1..count = backend slots (host order) */
	__u16 pad1;
};

/* lb_service.flags */
#define LB_FLAG_NODEPORT (1 << 0)

struct lb_service {
	__u32 backend_id; /* slot entries: the backend; master: 0 */
	__u16 count;	  /* master: number of backend slots; slot entries: 0 */
	__u16 pad0;
	__u32 rev_nat_id; /* master: id in the rev-NAT map */
	__u8 flags;	  /* LB_FLAG_* */
	__u8 pad1[3];
};

struct lb_backend {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 flags;
};

/* rev-NAT id → frontend: gives every frontend a stable numeric id. */
struct lb_revnat {
	__be32 address;
	__be16 port;
	__u8 proto;
	__u8 pad0;
};

/* ct_key.dir */
#define CT_DIR_FORWARD 0 /* client → frontend, as the client sent it */
#define CT_DIR_REPLY 1	 /* backend → client, as the backend sends it */

struct ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;
	__u16 pad0;
};

/* ct_entry.flags */
#define CT_FLAG_SEEN_FIN (1 << 0)
#define CT_FLAG_SEEN_RST (1 << 1)
#define CT_FLAG_NODEPORT (1 << 2)

struct ct_entry {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() (CLOCK_MONOTONIC) */
	__u64 created_ns;
	/*
	 * Forward entries: the backend to DNAT to.
	 * Reply entries: the frontend to put back as the source.
	 */
	__be32 nat_address;
	__be16 nat_port;
	__u8 flags; /* CT_FLAG_* */
	__u8 pad0;
	__u32 rev_nat_id;
	__u32 backend_id;
	/*
	 * NodePort flows: the node device the request came in on. Replies are
	 * redirected straight back out of it: after rev-NAT their source is a
	 * node address, which the stack would drop as martian if they went
	 * through routing.
	 */
	__u32 ifindex;
	__u32 pad1;
};

/* Index of the per-CPU counters in the metrics map. */
enum sluice_metric {
	METRIC_PACKETS_SEEN = 0,
	METRIC_SERVICE_NEW_FLOW = 1,	   /* backend selected, CT created */
	METRIC_SERVICE_CT_HIT = 2,	   /* forward packet translated from CT */
	METRIC_REVNAT = 3,		   /* reply translated back */
	METRIC_DROP_NO_BACKEND = 4,	   /* no usable endpoint: rejected */
	METRIC_REJECT_TCP_RST = 5,
	METRIC_REJECT_ICMP = 6,
	METRIC_DROP_INCONSISTENT_SLOT = 7, /* master said N, slot/backend missing */
	METRIC_DROP_CT_FULL = 8,	   /* CT insert failed */
	METRIC_DROP_REJECT_FAILED = 9,	   /* could not build the reject packet */
	METRIC_DROP_INVALID = 10,	   /* truncated / malformed headers */
	METRIC_NODEPORT_NEW_FLOW = 11,
	METRIC_MAX = 16,
};

#ifndef __cplusplus
_Static_assert(sizeof(struct lb_service_key) == 12, "lb_service_key layout");
_Static_assert(sizeof(struct lb_service) == 16, "lb_service layout");
_Static_assert(sizeof(struct lb_backend) == 8, "lb_backend layout");
_Static_assert(sizeof(struct lb_revnat) == 8, "lb_revnat layout");
_Static_assert(sizeof(struct ct_key) == 16, "ct_key layout");
_Static_assert(sizeof(struct ct_entry) == 40, "ct_entry layout");
#endif

#endif /* SLUICE_MAPS_H */
