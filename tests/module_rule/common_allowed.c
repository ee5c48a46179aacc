/* Probe: what common/ may use builds. */
#include <stdlib.h>
#include "common/buf.h"
#include "kv/errors.h"
int probe(void);
int probe(void) { return KV_EINVAL < 0 ? 0 : 1; }
