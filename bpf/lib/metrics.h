/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Per-CPU counters: per-CPU so that no two CPUs ever write the same cache
 * line; the agent sums the CPUs when it reads.
 *  - sl_metrics: event counters (new flows, conntrack hits, lost events...),
 *    indexed by enum sluice_metric;
 *  - sl_traffic: packets and bytes per (drop reason, observation point),
 *    reason NONE being the forwarded traffic.
 */
#ifndef SLUICE_LIB_METRICS_H
#define SLUICE_LIB_METRICS_H

#include "maps.h"

/* traffic_count() masks its index instead of checking it: both must be powers of two. */
_Static_assert((SLUICE_REASON_MAX & (SLUICE_REASON_MAX - 1)) == 0, "SLUICE_REASON_MAX");
_Static_assert((SLUICE_OBS_MAX & (SLUICE_OBS_MAX - 1)) == 0, "SLUICE_OBS_MAX");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, METRIC_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct sluice_traffic);
	__uint(max_entries, SLUICE_TRAFFIC_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sl_traffic SEC(".maps");

/* metric_inc() - count one occurrence of @idx (enum sluice_metric). */
static __always_inline void metric_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&sl_metrics, &idx);

	if (v)
		*v += 1;
}

/**
 * traffic_count() - account one packet of @len bytes to (@reason, @point).
 *
 * Every packet a program sees is counted exactly once, at the verdict, so
 * the sum over reasons is everything the programs handled.
 */
static __always_inline void traffic_count(__u8 reason, __u8 point, __u32 len)
{
	/* Masked rather than checked: the verifier then knows the index is in range. */
	__u32 idx = ((__u32)(reason & (SLUICE_REASON_MAX - 1)) * SLUICE_OBS_MAX) +
		    (point & (SLUICE_OBS_MAX - 1));
	struct sluice_traffic *t = bpf_map_lookup_elem(&sl_traffic, &idx);

	if (t) {
		t->packets += 1;
		t->bytes += len;
	}
}

#endif /* SLUICE_LIB_METRICS_H */
