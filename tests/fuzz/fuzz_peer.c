/* fuzz_peer.c — libFuzzer target for the raft message codec that decodes
 * member-to-member traffic (raft/io_codec.h: PEER_MSG_RAFT bodies, raft
 * configurations, snapshot descriptors).
 *
 * The transport's frame and HELLO parsing (raft/transport.c) is static and
 * only reachable through real sockets, so it is not fuzzed here; the codec
 * is what turns a peer's bytes into raft structures. The private header
 * is reached through the include path (as tests/unit/raft does); nothing
 * in raft/ is changed.
 *
 * The input is decoded as a message, a configuration and a descriptor.
 * Invariants (abort on violation): a decoded message or configuration
 * encodes back to exactly the input bytes (the encoding is canonical and
 * decoding rejects anything else); ASan/UBSan/LeakSanitizer check memory,
 * including io_msg_release of every decoded message. */
#include <raft.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *why)
{
	fprintf(stderr, "fuzz_peer: %s\n", why);
	abort();
}

static void msg(const uint8_t *data, size_t size)
{
	struct raft_message m;
	unsigned char *out = NULL;
	size_t n = 0;

	memset(&m, 0, sizeof(m));
	if (io_msg_decode(data, size, &m) != 0)
		return;
	if (io_msg_encode(&m, &out, &n) != 0)
		fail("encode of a decoded message failed");
	if (n != size || memcmp(out, data, size) != 0)
		fail("message: encode(decode(x)) != x");
	free(out);
	io_msg_release(&m);
}

static void conf(const uint8_t *data, size_t size)
{
	struct raft_configuration c;
	unsigned char *out;
	size_t n;

	if (io_conf_decode(data, size, &c) != 0)
		return;
	n = io_conf_size(&c);
	out = malloc(n ? n : 1);
	if (!out)
		abort();
	io_conf_encode(&c, out);
	if (n != size || memcmp(out, data, size) != 0)
		fail("configuration: encode(decode(x)) != x");
	free(out);
	raft_configuration_close(&c);
}

static void desc(const uint8_t *data, size_t size)
{
	struct kvraft_desc d;
	unsigned char out[KVRAFT_DESC_SIZE];

	if (io_desc_decode(data, size, &d) != 0)
		return;
	io_desc_encode(&d, out);
	if (size != KVRAFT_DESC_SIZE)
		fail("descriptor of the wrong size accepted");
	if (memcmp(out, data, KVRAFT_DESC_SIZE) != 0)
		fail("descriptor: encode(decode(x)) differs");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	msg(data, size);
	conf(data, size);
	desc(data, size);
	return 0;
}
