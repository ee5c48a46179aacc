/* Probe: must fail to compile inside a module that may not use <sys/socket.h>. */
#include <sys/socket.h>
int probe(void);
int probe(void) { return 0; }
