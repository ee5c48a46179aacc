/* Helpers for the raft tests: scratch directories, bounded loop runs and
 * an in-memory network with deterministic FIFO delivery on the loop. */
#ifndef KV_TEST_RAFT_UTIL_H
#define KV_TEST_RAFT_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "kvraft/node.h"

/* A fresh directory under $TMPDIR (or /tmp); malloc'd path. */
char *rt_mkdtemp(void);
/* rm -rf dir (bounded depth). */
void rt_rmtree(const char *dir);

/* Runs loop until pred(arg) or timeout_ms of loop time passed. Returns
 * pred's last value. */
bool rt_run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg,
		  uint64_t timeout_ms);
/* Runs the loop for ms. */
void rt_run_for(uv_loop_t *loop, uint64_t ms);

typedef void (*rt_deliver_fn)(void *arg, uint64_t from, uint8_t type,
			      const void *body, size_t len);

#define RT_MAX_MEMBERS 8

struct rt_msg;
struct rt_net {
	uv_loop_t *loop;
	uv_timer_t timer;
	struct rt_msg *head, *tail;
	uint64_t delay_ms;
	struct rt_ep {
		uint64_t id;
		rt_deliver_fn fn;
		void *arg;
		struct kvraft_net net;
		struct rt_net *owner;
		int idx;
	} ep[RT_MAX_MEMBERS];
	int n;
	bool cut[RT_MAX_MEMBERS][RT_MAX_MEMBERS];
	uint64_t sent, delivered, dropped;
	uint64_t sent_by_type[16];
};

void rt_net_init(struct rt_net *n, uv_loop_t *loop);
/* Registers member id (its kvraft_net is returned; valid while n lives).
 * deliver may be set later with rt_net_attach. */
struct kvraft_net *rt_net_add(struct rt_net *n, uint64_t id);
void rt_net_attach(struct rt_net *n, uint64_t id, rt_deliver_fn fn,
		   void *arg);
/* fn = NULL: the member is down, messages to it are dropped. */
void rt_net_detach(struct rt_net *n, uint64_t id);
/* Cuts (or heals) the link a<->b. */
void rt_net_cut(struct rt_net *n, uint64_t a, uint64_t b, bool cut);
/* Cuts every link of id. */
void rt_net_isolate(struct rt_net *n, uint64_t id, bool cut);
/* Drops queued messages and closes the timer (run the loop after). */
void rt_net_close(struct rt_net *n);

#endif
