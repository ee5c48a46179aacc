/* Probe: what watch/ may use (common, storage's event types) builds. */
#include "common/crc32c.h"
#include "storage/mvcc.h"
#include "watch/watch.h"
int probe(void);
int probe(void) { return MVCC_EVENT_DELETE == 1 ? 0 : 1; }
