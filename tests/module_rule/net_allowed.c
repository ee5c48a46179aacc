/* Probe: what net/ may use (libuv, OpenSSL, llhttp, common) builds. */
#include <uv.h>
#include <openssl/ssl.h>
#include <llhttp.h>
#include "common/buf.h"
#include "net/conn.h"
int probe(void);
int probe(void) { return UV_VERSION_MAJOR > 0 ? 0 : 1; }
