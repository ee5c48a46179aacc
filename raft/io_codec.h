/* raft/io_codec.h — private: byte encodings of raft messages, raft
 * configurations and snapshot descriptors (little endian throughout).
 *
 * Message (PEER_MSG_RAFT body):
 *   u8 version (1) | u8 raft type (RAFT_IO_*) | 6 zero bytes, then per type
 *   REQUEST_VOTE          term, candidate_id, last_log_index, last_log_term,
 *                         flags (bit0 disrupt_leader, bit1 pre_vote)
 *   REQUEST_VOTE_RESULT   term, vote_granted (0/1), pre_vote (tribool 0..2)
 *   APPEND_ENTRIES        term, prev_log_index, prev_log_term, leader_commit,
 *                         n, n x (term, type, len), then the n payloads
 *                         back to back (no padding)
 *   APPEND_ENTRIES_RESULT term, rejected, last_log_index
 *   INSTALL_SNAPSHOT      term, last_index, last_term, conf_index,
 *                         conf_len, conf (kvraft_conf encoding), data_len,
 *                         data
 *   TIMEOUT_NOW           term, last_log_index, last_log_term
 * every field a u64. Decoding checks every length against the body and
 * rejects trailing bytes, unknown types and versions (KV_EPROTO).
 *
 * Configuration: u64 n, n x (u64 id, u64 role, u64 addr_len, addr bytes).
 *
 * Snapshot descriptor (the raft snapshot "data", KVRAFT_DESC_SIZE bytes):
 *   "KVSNAPD2" | u64 index | u64 term | u64 size | u32 crc | u32 zero |
 *   u64 file_index | u64 file_term
 * index/term are raft's (the snapshot's place in the log); the state is
 * the file <data-dir>/snap/<term>-<index>.snap, which holds the state
 * machine at file_index/file_term (>= index: the state machine may write
 * a later consistent state, see kvraft_sm.write_snapshot). size and crc
 * are what the state machine reported for the file. */
#ifndef KVRAFT_IO_CODEC_H
#define KVRAFT_IO_CODEC_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#define KVRAFT_MSG_VERSION 1
#define KVRAFT_DESC_SIZE 56u
/* Largest number of entries / configuration servers accepted on decode. */
#define KVRAFT_MAX_ENTRIES (1u << 20)
#define KVRAFT_MAX_SERVERS 1024u

struct kvraft_desc {
	uint64_t index;
	uint64_t term;
	uint64_t size;
	uint32_t crc;
	uint64_t file_index;
	uint64_t file_term;
};

void io_put64(unsigned char *p, uint64_t v);
uint64_t io_get64(const unsigned char *p);
void io_put32(unsigned char *p, uint32_t v);
uint32_t io_get32(const unsigned char *p);

void io_desc_encode(const struct kvraft_desc *d, unsigned char *p);
/* 0 or KV_EPROTO (bad magic or length). */
int io_desc_decode(const void *p, size_t len, struct kvraft_desc *d);

size_t io_conf_size(const struct raft_configuration *c);
/* Writes io_conf_size(c) bytes. */
void io_conf_encode(const struct raft_configuration *c, unsigned char *p);
/* Decodes into c (raft_configuration_init'ed by this function; servers
 * and addresses raft_malloc'd, free with raft_configuration_close). */
int io_conf_decode(const unsigned char *p, size_t len,
		   struct raft_configuration *c);

/* Encodes m into a malloc'd buffer (*out, *len). KV_ENOMEM/KV_EINVAL. */
int io_msg_encode(const struct raft_message *m, unsigned char **out,
		  size_t *len);
/* Decodes a message. On success memory is allocated with raft_malloc the
 * way raft's recv callback takes ownership of it: append entries get an
 * entries array plus one batch holding all payloads; install snapshot a
 * configuration and a data buffer. server_id/address are not set.
 * Use io_msg_release() to free a decoded message raft did not take. */
int io_msg_decode(const void *body, size_t len, struct raft_message *m);
void io_msg_release(struct raft_message *m);

#endif
