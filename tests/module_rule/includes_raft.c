/* Probe: must fail to compile inside a module that may not use <raft.h>. */
#include <raft.h>
int probe(void);
int probe(void) { return 0; }
