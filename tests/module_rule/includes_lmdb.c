/* Probe: must fail to compile inside a module that may not use <lmdb.h>. */
#include <lmdb.h>
int probe(void);
int probe(void) { return 0; }
