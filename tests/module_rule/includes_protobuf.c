/* Probe: must fail to compile inside a module that may not use <protobuf-c/protobuf-c.h>. */
#include <protobuf-c/protobuf-c.h>
int probe(void);
int probe(void) { return 0; }
