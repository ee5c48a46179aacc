/* Probe: must fail to compile inside a module that may not use <uv.h>. */
#include <uv.h>
int probe(void);
int probe(void) { return 0; }
