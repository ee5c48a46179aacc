/* etcd's v3lock service (/v3lockpb.Lock): not served yet. */
#include "server_internal.h"

static void unserved(struct kvd_call *c, ProtobufCMessage *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
	kvd_call_fail(c, KV_GRPC_UNIMPLEMENTED, "kvd: locks are not served yet");
}

void kvd_svc_lock(struct kvd_server *s, struct kvd_call *c,
		  ProtobufCMessage *m)
{
	(void)s;
	unserved(c, m);
}

void kvd_svc_unlock(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	(void)s;
	unserved(c, m);
}
