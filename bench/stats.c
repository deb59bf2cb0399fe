/* bench/stats.c - tether-bench measurements: latency histograms, server RSS, JSON lines, progress. */
#include "bench.h"

#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Log-linear histogram: bucket [e][m] covers values whose highest set bit is
 * e, split into 64 linear steps, so any reported percentile is within 1.6%
 * of the true value; memory is fixed whatever the run length. */
static void bucket_of(uint64_t v, unsigned *e, unsigned *m)
{
	unsigned msb;

	if (v < 64) {
		*e = 0;
		*m = (unsigned)v;
		return;
	}
	msb = 63u - (unsigned)__builtin_clzll(v);
	*e = msb - 5;                         /* v >= 64: msb >= 6 -> e >= 1 */
	*m = (unsigned)(v >> (msb - 6)) & 63u;
}

static uint64_t bucket_mid(unsigned e, unsigned m)
{
	unsigned msb;
	uint64_t lo, step;

	if (e == 0)
		return m;
	msb = e + 5;
	step = 1ull << (msb - 6);
	lo = (1ull << msb) | ((uint64_t)m * step);
	return lo + step / 2;
}

void hist_add(struct hist *h, uint64_t ns)
{
	unsigned e, m;

	bucket_of(ns, &e, &m);
	if (e > 63)
		e = 63;
	h->b[e][m]++;
	if (!h->n || ns < h->min)
		h->min = ns;
	if (ns > h->max)
		h->max = ns;
	h->n++;
	h->sum += (double)ns;
}

/* Returns the <p>-th percentile (0 < p <= 100) in ns; 0 when empty. */
uint64_t hist_pct(const struct hist *h, double p)
{
	uint64_t want, seen = 0;

	if (!h->n)
		return 0;
	want = (uint64_t)ceil((double)h->n * p / 100.0);
	if (want < 1)
		want = 1;
	for (unsigned e = 0; e < 64; e++)
		for (unsigned m = 0; m < 64; m++) {
			seen += h->b[e][m];
			if (seen >= want) {
				uint64_t v = bucket_mid(e, m);

				return v > h->max ? h->max : v < h->min ? h->min : v;
			}
		}
	return h->max;
}

static long status_kib(int pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static int ppid_of(int pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	int pp = -1;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fgets(buf, sizeof(buf), f)) {
		p = strrchr(buf, ')');       /* comm may contain spaces */
		if (p && sscanf(p + 2, "%*c %d", &pp) != 1)
			pp = -1;
	}
	fclose(f);
	return pp;
}

/* Sums VmRSS (KiB) over <pid> and all its descendants (Erlang's beam.smp
 * runs under a shell wrapper, for instance). Returns -1 if <pid> is gone. */
long rss_tree_kib(int pid, int *nprocs)
{
	static int pids[4096], all[65536], parents[65536];
	int n = 0, found = 1, na = 0;
	long total;
	DIR *d;
	struct dirent *de;

	if (pid <= 0)
		return -1;
	total = status_kib(pid, "VmRSS");
	if (total < 0)
		return -1;
	pids[n++] = pid;
	d = opendir("/proc");
	if (d) {
		while ((de = readdir(d)) && na < 65536) {
			if (!isdigit((unsigned char)de->d_name[0]))
				continue;
			all[na] = atoi(de->d_name);
			parents[na] = ppid_of(all[na]);
			na++;
		}
		closedir(d);
	}
	/* bounded: each pass adds at least one pid or stops */
	while (found && n < 4096) {
		found = 0;
		for (int i = 0; i < na && n < 4096; i++) {
			int in = 0, parent_in = 0;

			for (int j = 0; j < n; j++) {
				if (pids[j] == all[i])
					in = 1;
				if (pids[j] == parents[i])
					parent_in = 1;
			}
			if (!in && parent_in) {
				long r = status_kib(all[i], "VmRSS");

				pids[n++] = all[i];
				if (r > 0)
					total += r;
				found = 1;
			}
		}
	}
	if (nprocs)
		*nprocs = n;
	return total;
}

/* --- JSON lines: one object per result, on stdout, no prefix ------------- */

static char jbuf[8192];
static size_t jlen;

static void jappend(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void jappend(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (jlen >= sizeof(jbuf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(jbuf + jlen, sizeof(jbuf) - jlen, fmt, ap);
	va_end(ap);
	if (n > 0)
		jlen += (size_t)n;
}

static void jkey(const char *k)
{
	jappend("%s\"%s\":", jlen > 1 ? "," : "", k);
}

void json_begin(const char *m)
{
	jlen = 0;
	jappend("{");
	json_str("mode", m);
	json_str("server", opt.label);
}

void json_str(const char *k, const char *v)
{
	jkey(k);
	if (!v) {
		jappend("null");
		return;
	}
	jappend("\"");
	for (const char *p = v; *p; p++) {
		if (*p == '"' || *p == '\\')
			jappend("\\%c", *p);
		else if ((unsigned char)*p < 0x20)
			jappend("\\u%04x", (unsigned)*p);
		else
			jappend("%c", *p);
	}
	jappend("\"");
}

void json_int(const char *k, long long v)
{
	jkey(k);
	jappend("%lld", v);
}

void json_num(const char *k, double v)
{
	jkey(k);
	if (isfinite(v))
		jappend("%.6g", v);
	else
		jappend("null");
}

void json_bool(const char *k, int v)
{
	jkey(k);
	jappend("%s", v ? "true" : "false");
}

/* Adds <prefix>_p50_ms, _p99_ms, _max_ms (null when there are no samples). */
void json_hist_ms(const char *prefix, const struct hist *h)
{
	char k[64];

	snprintf(k, sizeof(k), "%s_p50_ms", prefix);
	json_num(k, h->n ? (double)hist_pct(h, 50) / 1e6 : NAN);
	snprintf(k, sizeof(k), "%s_p99_ms", prefix);
	json_num(k, h->n ? (double)hist_pct(h, 99) / 1e6 : NAN);
	snprintf(k, sizeof(k), "%s_max_ms", prefix);
	json_num(k, h->n ? (double)h->max / 1e6 : NAN);
}

/* Adds "<k>":{"name":count,...}. */
void json_counts(const char *k, const char *const *names, const long *counts, int n)
{
	jkey(k);
	jappend("{");
	for (int i = 0; i < n; i++) {
		if (i)
			jappend(",");
		jappend("\"");
		for (const char *p = names[i]; *p; p++)
			if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
				jappend("%c", *p);
		jappend("\":%ld", counts[i]);
	}
	jappend("}");
}

void json_end(void)
{
	jappend("}");
	fwrite(jbuf, 1, jlen, stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

/* At most one progress line a second, on stderr. */
void progress(const char *fmt, ...)
{
	static uint64_t last;
	uint64_t now = now_ns();
	va_list ap;

	if (opt.quiet || now - last < 1000000000ull)
		return;
	last = now;
	fprintf(stderr, "tether-bench[%s]: ", opt.label);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
