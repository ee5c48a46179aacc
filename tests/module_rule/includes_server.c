/* Probe: raft/ must not see the server (it does not link it). */
#include "server/server.h"
int probe(void);
int probe(void) { return 0; }
