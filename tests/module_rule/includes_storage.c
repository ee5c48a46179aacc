/* Probe: common/ must not see storage headers. */
#include "storage/wal.h"
int probe(void);
int probe(void) { return 0; }
