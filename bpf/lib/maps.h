/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map definitions. Every program object includes this header; the maps are
 * pinned by name under the node's bpffs directory, so all programs (and the
 * agent, and the agent after a restart) share one instance of each.
 * The load-balancing state lives here; counters are in metrics.h, the event
 * ring buffer and run-time switches in events.h.
 */
#ifndef SLUICE_LIB_MAPS_H
#define SLUICE_LIB_MAPS_H

#include "common.h"

#ifndef LIBBPF_PIN_BY_NAME
#define LIBBPF_PIN_BY_NAME 1
#endif

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_service_key);
	__type(value, struct lb_service);
	__uint(max_entries, SLUICE_SERVICES_MAX);
	/* No prealloc: memory follows the number of Services actually programmed. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, SLUICE_BACKENDS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_backends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_revnat);
	__uint(max_entries, SLUICE_REVNAT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_revnat SEC(".maps");

/* LRU: when full, the least recently used flows go first, never an insert failure. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_entry);
	__uint(max_entries, SLUICE_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_ct SEC(".maps");

#endif /* SLUICE_LIB_MAPS_H */
