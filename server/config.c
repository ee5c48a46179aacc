/* kvd's flags (server/config.h). */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvraft/ids.h"
#include "net/conn.h"

enum kind { K_STR, K_BOOL, K_UINT, K_U64, K_DURATION };

struct flag {
	const char *name;
	enum kind kind;
	size_t off;
	const char *help;
};

#define F(n, k, field, h) { n, k, offsetof(struct kvd_config, field), h }
static const struct flag flags[] = {
	F("name", K_STR, name, "human-readable name for this member"),
	F("data-dir", K_STR, data_dir, "path to the data directory"),
	F("listen-client-urls", K_STR, listen_client_urls,
	  "list of URLs to listen on for client traffic"),
	F("advertise-client-urls", K_STR, advertise_client_urls,
	  "list of this member's client URLs to advertise"),
	F("listen-peer-urls", K_STR, listen_peer_urls,
	  "list of URLs to listen on for peer traffic"),
	F("initial-advertise-peer-urls", K_STR, initial_advertise_peer_urls,
	  "list of this member's peer URLs to advertise"),
	F("initial-cluster", K_STR, initial_cluster,
	  "initial cluster configuration for bootstrapping"),
	F("initial-cluster-state", K_STR, initial_cluster_state,
	  "initial cluster state ('new' or 'existing')"),
	F("initial-cluster-token", K_STR, initial_cluster_token,
	  "initial cluster token for bootstrapping"),
	F("cert-file", K_STR, cert_file, "path to the client server TLS cert"),
	F("key-file", K_STR, key_file, "path to the client server TLS key"),
	F("trusted-ca-file", K_STR, trusted_ca_file,
	  "path to the client server TLS trusted CA cert file"),
	F("client-cert-auth", K_BOOL, client_cert_auth,
	  "enable client cert authentication"),
	F("peer-cert-file", K_STR, peer_cert_file,
	  "path to the peer server TLS cert"),
	F("peer-key-file", K_STR, peer_key_file,
	  "path to the peer server TLS key"),
	F("peer-trusted-ca-file", K_STR, peer_trusted_ca_file,
	  "path to the peer server TLS trusted CA file"),
	F("peer-client-cert-auth", K_BOOL, peer_client_cert_auth,
	  "enable peer client cert authentication"),
	F("heartbeat-interval", K_UINT, heartbeat_ms,
	  "time (in milliseconds) of a heartbeat interval"),
	F("election-timeout", K_UINT, election_ms,
	  "time (in milliseconds) for an election to timeout"),
	F("snapshot-count", K_U64, snapshot_count,
	  "number of committed transactions to trigger a snapshot"),
	F("experimental-snapshot-catchup-entries", K_U64, snapshot_catchup,
	  "number of entries for a slow follower to catch up after "
	  "compacting the raft storage entries"),
	F("max-request-bytes", K_U64, max_request_bytes,
	  "maximum client request size in bytes the server will accept"),
	F("quota-backend-bytes", K_U64, quota_backend_bytes,
	  "raise alarms when backend size exceeds the given quota"),
	F("max-txn-ops", K_UINT, max_txn_ops,
	  "maximum number of operations permitted in a transaction"),
	F("experimental-enable-lease-checkpoint", K_BOOL, lease_checkpoint,
	  "checkpoint the remaining TTL of long leases so a leader change "
	  "does not reset it (kvd: on by default)"),
	F("experimental-lease-checkpoint-interval", K_DURATION,
	  lease_checkpoint_ms,
	  "how often the leader checkpoints leases' remaining TTL (e.g. 5m, "
	  "30s)"),
	F("log-level", K_STR, log_level,
	  "log level: debug, info, warn, error"),
};
#undef F
#define NFLAGS (sizeof(flags) / sizeof(flags[0]))

static enum kvd_parse_result fail(char *err, size_t errlen, const char *fmt,
				  ...) __attribute__((format(printf, 3, 4)));
static enum kvd_parse_result fail(char *err, size_t errlen, const char *fmt,
				  ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return KVD_PARSE_ERROR;
}

static const struct flag *find_flag(const char *n, size_t len)
{
	for (size_t i = 0; i < NFLAGS; i++)
		if (strlen(flags[i].name) == len &&
		    memcmp(flags[i].name, n, len) == 0)
			return &flags[i];
	return NULL;
}

static int parse_bool(const char *v, bool *out)
{
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
	    strcmp(v, "t") == 0 || strcmp(v, "TRUE") == 0) {
		*out = true;
		return 0;
	}
	if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 ||
	    strcmp(v, "f") == 0 || strcmp(v, "FALSE") == 0) {
		*out = false;
		return 0;
	}
	return -1;
}

/* A Go duration ("5m", "1m30s", "250ms", "1.5s") in milliseconds. */
static int parse_duration(const char *v, uint64_t *out)
{
	static const struct {
		const char *unit;
		double ms;
	} units[] = { { "ms", 1 }, { "us", 0.001 }, { "ns", 0.000001 },
		      { "h", 3600000 }, { "m", 60000 }, { "s", 1000 } };
	double total = 0;
	if (*v == '\0')
		return -1;
	if (strcmp(v, "0") == 0) {
		*out = 0;
		return 0;
	}
	while (*v != '\0') {
		char *end;
		if (!isdigit((unsigned char)*v) && *v != '.')
			return -1;
		errno = 0;
		double x = strtod(v, &end);
		if (errno != 0 || end == v || x < 0)
			return -1;
		v = end;
		size_t i;
		for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t n = strlen(units[i].unit);
			if (strncmp(v, units[i].unit, n) == 0 &&
			    (units[i].unit[0] != 'm' || n == 2 || v[1] != 's')) {
				total += x * units[i].ms;
				v += n;
				break;
			}
		}
		if (i == sizeof(units) / sizeof(units[0]))
			return -1;
	}
	if (total > 1e15)
		return -1;
	*out = (uint64_t)total;
	return 0;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *out)
{
	char *end;
	if (*v == '\0' || !isdigit((unsigned char)*v))
		return -1;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno != 0 || *end != '\0' || x > max)
		return -1;
	*out = x;
	return 0;
}

/* Stores value v into the field of f. */
static enum kvd_parse_result set_flag(struct kvd_config *cfg,
				      const struct flag *f, const char *v,
				      char *err, size_t errlen)
{
	char *p = (char *)cfg + f->off;
	uint64_t x;
	switch (f->kind) {
	case K_STR:
		if (strcmp(f->name, "data-dir") == 0) {
			free(cfg->data_dir);
			cfg->data_dir = strdup(v);
			if (cfg->data_dir == NULL)
				return fail(err, errlen, "out of memory");
		} else {
			*(const char **)(void *)p = v;
		}
		return KVD_PARSE_RUN;
	case K_BOOL:
		if (parse_bool(v, (bool *)(void *)p) != 0)
			return fail(err, errlen,
				    "invalid boolean value \"%s\" for flag "
				    "--%s", v, f->name);
		return KVD_PARSE_RUN;
	case K_UINT:
		if (parse_u64(v, 0xffffffffu, &x) != 0)
			return fail(err, errlen,
				    "invalid value \"%s\" for flag --%s", v,
				    f->name);
		*(unsigned *)(void *)p = (unsigned)x;
		return KVD_PARSE_RUN;
	case K_U64:
		if (parse_u64(v, UINT64_MAX, &x) != 0)
			return fail(err, errlen,
				    "invalid value \"%s\" for flag --%s", v,
				    f->name);
		*(uint64_t *)(void *)p = x;
		return KVD_PARSE_RUN;
	case K_DURATION:
		if (parse_duration(v, &x) != 0)
			return fail(err, errlen,
				    "invalid value \"%s\" for flag --%s: "
				    "not a duration such as 5m or 30s",
				    v, f->name);
		*(uint64_t *)(void *)p = x;
		return KVD_PARSE_RUN;
	}
	return fail(err, errlen, "internal error");
}

static void usage(FILE *out)
{
	fprintf(out, "Usage:\n\n  kvd [flags]\n    Start a kvd member "
		     "(etcd 3.4 compatible flags).\n\n  kvd --version\n"
		     "  kvd --help\n\nFlags:\n");
	for (size_t i = 0; i < NFLAGS; i++)
		fprintf(out, "  --%s%s\n      %s\n", flags[i].name,
			flags[i].kind == K_BOOL ? "" : " <value>",
			flags[i].help);
	fprintf(out, "\nUnset flags are read from ETCD_<FLAG> environment "
		     "variables (e.g. ETCD_NAME), as etcd does.\n");
}

/* "a,b" contains exactly the URLs of m (as sets). */
static bool same_urls(const char *list, const struct kvraft_member *m)
{
	size_t n = 0;
	const char *p = list;
	while (*p != '\0') {
		const char *e = strchr(p, ',');
		size_t len = e ? (size_t)(e - p) : strlen(p);
		bool found = false;
		for (size_t i = 0; i < m->nurls; i++)
			if (strlen(m->urls[i]) == len &&
			    memcmp(m->urls[i], p, len) == 0)
				found = true;
		if (!found && len > 0)
			return false;
		if (len > 0)
			n++;
		if (e == NULL)
			break;
		p = e + 1;
	}
	return n == m->nurls;
}

static enum kvd_parse_result check_urls(const char *list, const char *flag,
					bool *any_tls, char *err,
					size_t errlen)
{
	struct net_url *u;
	size_t n;
	if (net_url_list_parse(list, &u, &n) != 0)
		return fail(err, errlen,
			    "--%s: invalid URL list \"%s\" (want "
			    "http(s)://host:port[,...])", flag, list);
	*any_tls = false;
	for (size_t i = 0; i < n; i++)
		*any_tls |= u[i].tls;
	free(u);
	return KVD_PARSE_RUN;
}

static enum kvd_parse_result validate(struct kvd_config *cfg, char *err,
				      size_t errlen)
{
	enum kvd_parse_result r;
	bool tls = false, tls2 = false;

	if (*cfg->name == '\0')
		return fail(err, errlen, "--name must not be empty");
	if (cfg->log_level != NULL && strcmp(cfg->log_level, "debug") != 0 &&
	    strcmp(cfg->log_level, "info") != 0 &&
	    strcmp(cfg->log_level, "warn") != 0 &&
	    strcmp(cfg->log_level, "error") != 0)
		return fail(err, errlen,
			    "--log-level: unknown level \"%s\" (debug, info, "
			    "warn, error)", cfg->log_level);
	if (strcmp(cfg->initial_cluster_state, "new") != 0 &&
	    strcmp(cfg->initial_cluster_state, "existing") != 0)
		return fail(err, errlen,
			    "--initial-cluster-state: \"%s\" is neither "
			    "\"new\" nor \"existing\"",
			    cfg->initial_cluster_state);
	if (cfg->heartbeat_ms == 0 || cfg->election_ms == 0)
		return fail(err, errlen,
			    "--heartbeat-interval and --election-timeout must "
			    "be positive");
	if (cfg->election_ms < 5 * cfg->heartbeat_ms)
		return fail(err, errlen,
			    "--election-timeout[%ums] should be at least as 5 "
			    "times as --heartbeat-interval[%ums]",
			    cfg->election_ms, cfg->heartbeat_ms);
	if (cfg->election_ms > 50000)
		return fail(err, errlen,
			    "--election-timeout[%ums] is too long, and should "
			    "be set less than 50000ms", cfg->election_ms);
	if (cfg->max_request_bytes == 0)
		return fail(err, errlen, "--max-request-bytes must be positive");
	if (cfg->max_txn_ops == 0)
		return fail(err, errlen, "--max-txn-ops must be positive");

	r = check_urls(cfg->listen_client_urls, "listen-client-urls", &tls,
		       err, errlen);
	if (r != KVD_PARSE_RUN)
		return r;
	r = check_urls(cfg->advertise_client_urls, "advertise-client-urls",
		       &tls2, err, errlen);
	if (r != KVD_PARSE_RUN)
		return r;
	if (tls && (cfg->cert_file == NULL || cfg->key_file == NULL))
		return fail(err, errlen,
			    "--listen-client-urls has an https URL but "
			    "--cert-file and --key-file are not both set");
	if ((cfg->cert_file == NULL) != (cfg->key_file == NULL))
		return fail(err, errlen,
			    "--cert-file and --key-file must be given together");
	if (cfg->client_cert_auth && cfg->trusted_ca_file == NULL)
		return fail(err, errlen,
			    "--client-cert-auth requires --trusted-ca-file");

	r = check_urls(cfg->listen_peer_urls, "listen-peer-urls", &tls, err,
		       errlen);
	if (r != KVD_PARSE_RUN)
		return r;
	r = check_urls(cfg->initial_advertise_peer_urls,
		       "initial-advertise-peer-urls", &tls2, err, errlen);
	if (r != KVD_PARSE_RUN)
		return r;
	if ((tls || tls2) &&
	    (cfg->peer_cert_file == NULL || cfg->peer_key_file == NULL ||
	     cfg->peer_trusted_ca_file == NULL))
		return fail(err, errlen,
			    "https peer URLs need --peer-cert-file, "
			    "--peer-key-file and --peer-trusted-ca-file (peers "
			    "authenticate each other with mutual TLS)");
	if ((cfg->peer_cert_file == NULL) != (cfg->peer_key_file == NULL))
		return fail(err, errlen, "--peer-cert-file and --peer-key-file "
					 "must be given together");
	if (cfg->peer_client_cert_auth && cfg->peer_trusted_ca_file == NULL)
		return fail(err, errlen, "--peer-client-cert-auth requires "
					 "--peer-trusted-ca-file");

	if (cfg->initial_cluster == NULL) {
		size_t n = strlen(cfg->name) +
			   strlen(cfg->initial_advertise_peer_urls) * 2 + 2;
		cfg->initial_cluster_buf = malloc(n + 64);
		if (cfg->initial_cluster_buf == NULL)
			return fail(err, errlen, "out of memory");
		/* etcd: name=url for each advertised peer URL */
		char *o = cfg->initial_cluster_buf;
		const char *p = cfg->initial_advertise_peer_urls;
		*o = '\0';
		while (*p != '\0') {
			const char *e = strchr(p, ',');
			size_t len = e ? (size_t)(e - p) : strlen(p);
			o += sprintf(o, "%s%s=%.*s",
				     o == cfg->initial_cluster_buf ? "" : ",",
				     cfg->name, (int)len, p);
			if (e == NULL)
				break;
			p = e + 1;
		}
		cfg->initial_cluster = cfg->initial_cluster_buf;
	}
	struct kvraft_cluster c;
	char msg[256];
	if (kvraft_cluster_parse(cfg->initial_cluster,
				 cfg->initial_cluster_token,
				 cfg->initial_cluster_state, &c, msg,
				 sizeof(msg)) != 0)
		return fail(err, errlen, "--initial-cluster: %s", msg);
	const struct kvraft_member *self = kvraft_cluster_find(&c, cfg->name);
	if (self == NULL) {
		kvraft_cluster_free(&c);
		return fail(err, errlen,
			    "couldn't find local name \"%s\" in the initial "
			    "cluster configuration (--initial-cluster)",
			    cfg->name);
	}
	if (!same_urls(cfg->initial_advertise_peer_urls, self)) {
		kvraft_cluster_free(&c);
		return fail(err, errlen,
			    "--initial-cluster has %s=... with URLs other than "
			    "--initial-advertise-peer-urls \"%s\"",
			    cfg->name, cfg->initial_advertise_peer_urls);
	}
	kvraft_cluster_free(&c);
	return KVD_PARSE_RUN;
}

static bool was_set(const bool *seen, const char *name)
{
	const struct flag *f = find_flag(name, strlen(name));
	return f != NULL && seen[f - flags];
}

/* ETCD_FOO_BAR for "foo-bar". */
static const char *env_for(const char *name)
{
	char var[96] = "ETCD_";
	size_t i = 5;
	for (const char *p = name; *p != '\0' && i + 1 < sizeof(var); p++)
		var[i++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
	var[i] = '\0';
	const char *v = getenv(var);
	return v != NULL && *v != '\0' ? v : NULL;
}

enum kvd_parse_result kvd_config_parse(int argc, char **argv,
				       struct kvd_config *cfg, void *out,
				       char *err, size_t errlen)
{
	FILE *o = out != NULL ? out : stdout;
	bool seen[NFLAGS] = { false };
	enum kvd_parse_result r;

	memset(cfg, 0, sizeof(*cfg));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || a[1] == '\0')
			return fail(err, errlen,
				    "'%s' is not a valid flag (flags start "
				    "with --)", a);
		a += a[1] == '-' ? 2 : 1;
		const char *eq = strchr(a, '=');
		size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
		if ((nlen == 4 && memcmp(a, "help", 4) == 0) ||
		    (nlen == 1 && a[0] == 'h')) {
			usage(o);
			return KVD_PARSE_EXIT;
		}
		if (nlen == 7 && memcmp(a, "version", 7) == 0) {
			fprintf(o, "kvd Version: %s\netcd API: %s\n",
				KVD_VERSION, KVD_ETCD_API);
			return KVD_PARSE_EXIT;
		}
		const struct flag *f = find_flag(a, nlen);
		if (f == NULL)
			return fail(err, errlen,
				    "unknown flag --%.*s (see kvd --help)",
				    (int)nlen, a);
		const char *v;
		if (eq != NULL) {
			v = eq + 1;
		} else if (f->kind == K_BOOL) {
			v = "true";
		} else {
			if (i + 1 >= argc)
				return fail(err, errlen,
					    "flag needs an argument: --%s",
					    f->name);
			v = argv[++i];
		}
		r = set_flag(cfg, f, v, err, errlen);
		if (r != KVD_PARSE_RUN)
			return r;
		seen[f - flags] = true;
	}
	/* Environment for unset flags, then defaults. */
	for (size_t i = 0; i < NFLAGS; i++) {
		if (seen[i])
			continue;
		const char *v = env_for(flags[i].name);
		if (v == NULL)
			continue;
		r = set_flag(cfg, &flags[i], v, err, errlen);
		if (r != KVD_PARSE_RUN)
			return r;
		seen[i] = true;
	}
	if (cfg->name == NULL)
		cfg->name = "default";
	if (cfg->data_dir == NULL) {
		size_t n = strlen(cfg->name) + 8;
		cfg->data_dir = malloc(n);
		if (cfg->data_dir == NULL)
			return fail(err, errlen, "out of memory");
		snprintf(cfg->data_dir, n, "%s.etcd", cfg->name);
	}
	if (cfg->listen_client_urls == NULL)
		cfg->listen_client_urls = "http://localhost:2379";
	if (cfg->advertise_client_urls == NULL)
		cfg->advertise_client_urls = "http://localhost:2379";
	if (cfg->listen_peer_urls == NULL)
		cfg->listen_peer_urls = "http://localhost:2380";
	if (cfg->initial_advertise_peer_urls == NULL)
		cfg->initial_advertise_peer_urls = "http://localhost:2380";
	if (cfg->initial_cluster_state == NULL)
		cfg->initial_cluster_state = "new";
	if (cfg->initial_cluster_token == NULL)
		cfg->initial_cluster_token = "etcd-cluster";
	if (!was_set(seen, "heartbeat-interval"))
		cfg->heartbeat_ms = 100;
	if (!was_set(seen, "election-timeout"))
		cfg->election_ms = 1000;
	if (cfg->snapshot_count == 0)
		cfg->snapshot_count = 100000;
	if (cfg->snapshot_catchup == 0)
		cfg->snapshot_catchup = 5000; /* etcd's snapshotCatchUpEntries */
	if (!was_set(seen, "max-request-bytes"))
		cfg->max_request_bytes = 1572864;
	if (cfg->quota_backend_bytes == 0)
		cfg->quota_backend_bytes = (uint64_t)2 << 30;
	if (!was_set(seen, "max-txn-ops"))
		cfg->max_txn_ops = 128;
	if (!was_set(seen, "experimental-enable-lease-checkpoint"))
		cfg->lease_checkpoint = true;
	if (!was_set(seen, "experimental-lease-checkpoint-interval"))
		cfg->lease_checkpoint_ms = 5 * 60 * 1000;
	if (!cfg->lease_checkpoint)
		cfg->lease_checkpoint_ms = 0;
	if (cfg->log_level == NULL)
		cfg->log_level = "info";
	return validate(cfg, err, errlen);
}

void kvd_config_free(struct kvd_config *cfg)
{
	free(cfg->data_dir);
	free(cfg->initial_cluster_buf);
	cfg->data_dir = NULL;
	cfg->initial_cluster_buf = NULL;
}
