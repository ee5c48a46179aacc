/* kvraft/node.h — placeholder, completed below */
#ifndef KVRAFT_NODE_H
#define KVRAFT_NODE_H
#include <stddef.h>
#include <stdint.h>
/* How the node reaches its peers. send copies (or consumes) body before
 * returning; type is an enum peer_msg_type (kvraft/transport.h). Returns
 * 0 if queued, a negative KV_E* if the peer is unknown/unreachable (the
 * message is dropped; raft retries). Called on the loop thread. */
struct kvraft_net {
	void *data;
	int (*send)(void *data, uint64_t to, uint8_t type, const void *body,
		    size_t len);
};
#endif
