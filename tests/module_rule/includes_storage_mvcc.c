/* Probe: net/ must not see storage headers. */
#include "storage/mvcc.h"
int probe(void);
int probe(void) { return 0; }
