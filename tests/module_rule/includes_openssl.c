/* Probe: must fail to compile inside a module that may not use <openssl/ssl.h>. */
#include <openssl/ssl.h>
int probe(void);
int probe(void) { return 0; }
