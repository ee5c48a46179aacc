/* Probe: what storage/ may use (LMDB, common, POSIX) builds. */
#include <lmdb.h>
#include <pthread.h>
#include "common/crc32c.h"
int probe(void);
int probe(void) { return MDB_VERSION_MAJOR > 0 ? 0 : 1; }
