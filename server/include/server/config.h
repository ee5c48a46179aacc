/* server/config.h — kvd's command line: etcd 3.4's flag names and meanings.
 *
 * Both "--flag value" and "--flag=value" are accepted (and "-flag", as Go's
 * flag package does). Boolean flags take no value, or "=true"/"=false".
 * Unset flags fall back to the ETCD_<FLAG> environment variable (dashes
 * as underscores, upper case), as etcd does, then to etcd's default.
 *
 * Pure parsing, no I/O except reading the environment; any thread. */
#ifndef KVD_SERVER_CONFIG_H
#define KVD_SERVER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVD_VERSION "0.1.0"
#define KVD_ETCD_API "3.4"
/* What /version and Status report: clients gate features on it. */
#define KVD_ETCD_SERVER_VERSION "3.4.23"
#define KVD_ETCD_CLUSTER_VERSION "3.4.0"

struct kvd_config {
	/* Strings point into argv / environ or static defaults, except
	 * data_dir, which is malloc'd (freed by kvd_config_free). */
	const char *name;
	char *data_dir;
	const char *listen_client_urls;
	const char *advertise_client_urls;
	const char *listen_peer_urls;
	const char *initial_advertise_peer_urls;
	const char *initial_cluster;       /* NULL: "<name>=<adv peer url>" */
	char *initial_cluster_buf;         /* owned, when synthesised */
	const char *initial_cluster_state; /* "new" | "existing" */
	const char *initial_cluster_token;
	const char *cert_file, *key_file, *trusted_ca_file;
	bool client_cert_auth;
	const char *peer_cert_file, *peer_key_file, *peer_trusted_ca_file;
	bool peer_client_cert_auth;
	unsigned heartbeat_ms;
	unsigned election_ms;
	uint64_t snapshot_count;
	uint64_t snapshot_catchup; /* raft entries kept behind a snapshot */
	uint64_t max_request_bytes;
	uint64_t quota_backend_bytes;
	unsigned max_txn_ops;
	/* Leader checkpoints of long leases' remaining TTL (etcd's
	 * --experimental-enable-lease-checkpoint, on by default in kvd) every
	 * lease_checkpoint_ms (--experimental-lease-checkpoint-interval, a Go
	 * duration; 5m). 0 when disabled. */
	bool lease_checkpoint;
	uint64_t lease_checkpoint_ms;
	const char *log_level;
};

enum kvd_parse_result {
	KVD_PARSE_RUN = 0,   /* start the server */
	KVD_PARSE_EXIT = 1,  /* --help / --version printed: exit 0 */
	KVD_PARSE_ERROR = 2, /* message in err: exit 2 */
};

/* Parses argv into cfg (zeroed first). --help / --version output goes to
 * out (a FILE *; NULL = stdout). Checks contradictions: https listen URL
 * without --cert-file/--key-file, --client-cert-auth without
 * --trusted-ca-file, https peer URLs without --peer-* certs, the same for
 * peers, --initial-cluster without --name's entry or without the
 * advertised peer URLs, unknown --initial-cluster-state, bad numbers. On
 * KVD_PARSE_ERROR err holds one line (no newline). The caller frees cfg
 * with kvd_config_free whatever the result. */
enum kvd_parse_result kvd_config_parse(int argc, char **argv,
				       struct kvd_config *cfg, void *out,
				       char *err, size_t errlen);
void kvd_config_free(struct kvd_config *cfg);

#endif
