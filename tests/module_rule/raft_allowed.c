/* Probe: what raft/ may use (libraft, libuv, storage, net, proto) builds. */
#include <raft.h>
#include <uv.h>
#include "storage/wal.h"
#include "net/conn.h"
#include "kvdpb/internal.pb-c.h"
#include "kvraft/node.h"
int probe(void);
int probe(void) { return RAFT_NOMEM == 1 ? 0 : 1; }
