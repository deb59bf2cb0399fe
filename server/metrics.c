/* server/metrics.c - sharded counters summed into the Prometheus text format. */
#include "tether/metrics.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tether/sbuf.h"

_Thread_local struct metrics_shard *metrics_cur;

static struct metrics_shard *shards; /* [0, nworkers): workers; [nworkers]: the rest */
static unsigned nshards;

static const struct {
	const char *name, *type, *help;
} families[] = {
#define METRIC_F_DEF(id, name, type, help) [id] = { name, type, help },
	METRIC_FAMILIES(METRIC_F_DEF)
#undef METRIC_F_DEF
};

static const struct {
	enum metric_family fam;
	const char *labels;
} series[] = {
#define METRIC_S_DEF(id, fam, labels) [id] = { fam, labels },
	METRIC_SERIES(METRIC_S_DEF)
#undef METRIC_S_DEF
};

/* Upper bounds of the buckets. time, in microseconds: resumptions, store
 * operations and loop lag take from ~50 µs (same node, warm; memory store;
 * an idle loop) to seconds (a store or a worker that is struggling).
 * count: queue depths, up to a few thousand (sm_max_queue). */
static const uint64_t bounds_time[METRIC_BUCKETS] = {
	50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000, 5000000,
};
static const uint64_t bounds_count[METRIC_BUCKETS] = {
	1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
};
#define SCALE_time 1e6 /* rendered in seconds */
#define SCALE_count 1.0

static const struct {
	const char *name, *help;
	const uint64_t *bound;
	double scale;
} hists[] = {
#define METRIC_H_DEF(id, name, help, bounds) [id] = { name, help, bounds_##bounds, SCALE_##bounds },
	METRIC_HISTOGRAMS(METRIC_H_DEF)
#undef METRIC_H_DEF
};

static const struct {
	const char *name, *help;
} gauges[] = {
#define METRIC_G_DEF(id, name, help) [id] = { name, help },
	METRIC_GAUGES(METRIC_G_DEF)
#undef METRIC_G_DEF
};

static struct {
	metrics_gauge_fn *fn;
	void *ud;
} gauge_readers[METRIC_GAUGE_COUNT];

/* metrics_resume_id() counts on the order of METRIC_RESUME_SERIES. */
_Static_assert(M_RESUME_ISR_OK_SAME == M_RESUME_CLASSIC_OK_SAME + 4 &&
	       M_RESUME_SASL2_FAILED_OTHER == M_RESUME_CLASSIC_OK_SAME + 11,
	       "resumption series out of order");

/* Resident set size from /proc/self/statm (pages), or -1. */
static int64_t rss_bytes(void *ud)
{
	(void)ud;
	FILE *f = fopen("/proc/self/statm", "re");
	long long size, resident;
	int n = f ? fscanf(f, "%lld %lld", &size, &resident) : 0;
	if (f)
		fclose(f);
	long page = sysconf(_SC_PAGESIZE);
	return n == 2 && page > 0 ? resident * page : -1;
}

static int64_t open_fds(void *ud)
{
	(void)ud;
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	long long n = -1; /* the directory's own descriptor */
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

int metrics_init(unsigned nworkers)
{
	/* aligned_alloc: each shard on its own cache lines, so two workers
	 * counting never write the same line. */
	size_t size = sizeof(struct metrics_shard) * (nworkers + 1u);
	shards = aligned_alloc(64, size);
	if (!shards)
		return -ENOMEM;
	memset(shards, 0, size);
	nshards = nworkers + 1u;
	metrics_cur = &shards[nworkers];
	metrics_gauge_set(G_RSS, rss_bytes, NULL);
	metrics_gauge_set(G_FDS, open_fds, NULL);
	return 0;
}

void metrics_attach(unsigned idx)
{
	if (shards && idx + 1u < nshards)
		metrics_cur = &shards[idx];
}

uint64_t metrics_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void metrics_observe_us(enum metric_hist h, uint64_t us)
{
	struct metrics_shard *m = metrics_cur;
	if (!m)
		return;
	const uint64_t *bound = hists[h].bound;
	unsigned b = 0;
	while (b < METRIC_BUCKETS && us > bound[b])
		b++;
	struct metrics_hist *mh = &m->h[h];
	atomic_store_explicit(&mh->bucket[b],
			      atomic_load_explicit(&mh->bucket[b], memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&mh->sum_us, atomic_load_explicit(&mh->sum_us, memory_order_relaxed) + us,
			      memory_order_relaxed);
}

static int64_t sum_series(enum metric_id id)
{
	int64_t v = 0;
	for (unsigned i = 0; i < nshards; i++)
		v += atomic_load_explicit(&shards[i].v[id], memory_order_relaxed);
	return v;
}

static int render_hist(enum metric_hist h, struct sbuf *out)
{
	int rc = sbuf_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name,
			     hists[h].help, hists[h].name);
	uint64_t cum = 0, sum_us = 0;
	for (unsigned b = 0; b <= METRIC_BUCKETS; b++) {
		for (unsigned i = 0; i < nshards; i++)
			cum += atomic_load_explicit(&shards[i].h[h].bucket[b], memory_order_relaxed);
		if (b < METRIC_BUCKETS)
			rc |= sbuf_printf(out, "%s_bucket{le=\"%g\"} %llu\n", hists[h].name,
					  (double)hists[h].bound[b] / hists[h].scale,
					  (unsigned long long)cum);
		else
			rc |= sbuf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", hists[h].name,
					  (unsigned long long)cum);
	}
	for (unsigned i = 0; i < nshards; i++)
		sum_us += atomic_load_explicit(&shards[i].h[h].sum_us, memory_order_relaxed);
	rc |= sbuf_printf(out, "%s_sum %.6f\n%s_count %llu\n", hists[h].name,
			  (double)sum_us / hists[h].scale,
			  hists[h].name, (unsigned long long)cum);
	return rc;
}

int metrics_render(struct sbuf *out)
{
	int rc = 0;
	for (unsigned f = 0; f < METRIC_FAMILY_COUNT; f++) {
		rc |= sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", families[f].name,
				  families[f].help, families[f].name, families[f].type);
		for (unsigned id = 0; id < METRIC_COUNT; id++) {
			if (series[id].fam != f)
				continue;
			if (series[id].labels[0])
				rc |= sbuf_printf(out, "%s{%s} %lld\n", families[f].name,
						  series[id].labels, (long long)sum_series(id));
			else
				rc |= sbuf_printf(out, "%s %lld\n", families[f].name,
						  (long long)sum_series(id));
		}
	}
	for (unsigned h = 0; h < METRIC_HIST_COUNT; h++)
		rc |= render_hist(h, out);
	for (unsigned g = 0; g < METRIC_GAUGE_COUNT; g++) {
		if (!gauge_readers[g].fn)
			continue;
		rc |= sbuf_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %lld\n", gauges[g].name,
				  gauges[g].help, gauges[g].name, gauges[g].name,
				  (long long)gauge_readers[g].fn(gauge_readers[g].ud));
	}
	return rc ? -ENOMEM : 0;
}

void metrics_gauge_set(enum metric_gauge g, metrics_gauge_fn *fn, void *ud)
{
	gauge_readers[g].fn = fn;
	gauge_readers[g].ud = ud;
}

void metrics_free(void)
{
	memset(gauge_readers, 0, sizeof(gauge_readers));
	free(shards);
	shards = NULL;
	nshards = 0;
	metrics_cur = NULL;
}
