/* Probe: raft/ must not parse JSON. */
#include <jansson.h>
int probe(void);
int probe(void) { return 0; }
