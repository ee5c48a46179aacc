/* kvraft/ids.h — etcd-compatible member/cluster ids and the parsing of
 * --initial-cluster, --initial-cluster-token, --initial-cluster-state.
 *
 * Member id (etcd membership.newMember without a timestamp): the first 8
 * bytes, big endian, of SHA-1 over the member's peer URLs sorted
 * bytewise and concatenated with no separator, followed by the cluster
 * token. Cluster id (RaftCluster.genID): the first 8 bytes, big endian,
 * of SHA-1 over the sorted member ids, each as 8 big-endian bytes.
 * The same flags therefore give the same ids as etcd 3.4.
 *
 * Pure functions; no I/O; thread-safe. */
#ifndef KVRAFT_IDS_H
#define KVRAFT_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define KVRAFT_MAX_MEMBERS 64
#define KVRAFT_MAX_URLS 8

/* urls need not be sorted (they are sorted for the hash). */
uint64_t kvraft_member_id(const char *const *urls, size_t n,
			  const char *token);
uint64_t kvraft_cluster_id(const uint64_t *ids, size_t n);

struct kvraft_member {
	char *name;
	char *urls[KVRAFT_MAX_URLS]; /* sorted */
	size_t nurls;
	uint64_t id;
};

enum kvraft_cluster_state {
	KVRAFT_CLUSTER_NEW = 0,
	KVRAFT_CLUSTER_EXISTING,
};

struct kvraft_cluster {
	struct kvraft_member *members; /* sorted by id */
	size_t n;
	uint64_t cluster_id;
	enum kvraft_cluster_state state;
	char *token;
};

/* Parses "name=url,name=url2,..." (a name may appear several times: its
 * URLs are merged, as etcd does), the token ("" = etcd's default
 * "etcd-cluster") and the state ("new", "existing"; NULL = "new").
 * Fills c (free with kvraft_cluster_free). KV_EINVAL with a message in
 * errmsg for a malformed list, an empty name or URL, a URL that is not
 * http(s)://host:port, the same URL on two members, duplicate ids, or
 * too many members/URLs; KV_ENOMEM. */
int kvraft_cluster_parse(const char *initial_cluster, const char *token,
			 const char *state, struct kvraft_cluster *c,
			 char *errmsg, size_t errlen);
void kvraft_cluster_free(struct kvraft_cluster *c);
/* The member called name, or NULL. */
const struct kvraft_member *kvraft_cluster_find(const struct kvraft_cluster *c,
						const char *name);

#endif
