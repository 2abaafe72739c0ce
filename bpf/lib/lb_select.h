/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frontend lookup and backend selection: the one place that decides which
 * backend a new connection gets, used per packet by the tc programs (lb.h)
 * and per connect()/sendmsg() by the socket hooks (sock.h), so both paths
 * balance identically.
 */
#ifndef SLUICE_LB_SELECT_H
#define SLUICE_LB_SELECT_H

#include "maps.h"

static __always_inline struct lb_service *lb_lookup(__be32 addr, __be16 port, __u8 proto)
{
	struct lb_service_key key = {
		.address = addr,
		.port = port,
		.proto = proto,
	};

	return bpf_map_lookup_elem(&sl_services, &key);
}

/**
 * lb_select_backend() - pick one of the frontend's backends at random.
 * @count: the master entry's backend count (non-zero).
 *
 * The reconciler writes slots before the master that counts them and shrinks
 * the master before deleting slots, so slot 1..count always exist; a miss here
 * means the maps are inconsistent and the packet is dropped, not misrouted.
 */
static __always_inline struct lb_backend *lb_select_backend(__be32 addr, __be16 port, __u8 proto,
							    __u16 count, __u32 *backend_id)
{
	struct lb_service_key key = {
		.address = addr,
		.port = port,
		.proto = proto,
	};
	struct lb_service *slot;

	key.slot = (bpf_get_prandom_u32() % count) + 1;
	slot = bpf_map_lookup_elem(&sl_services, &key);
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	return bpf_map_lookup_elem(&sl_backends, backend_id);
}

#endif /* SLUICE_LB_SELECT_H */
