/* etcd's v3election service (/v3electionpb.Election): not served yet. */
#include "server_internal.h"

#define MSG "kvd: elections are not served yet"

static void unserved(struct kvd_call *c, ProtobufCMessage *m)
{
	protobuf_c_message_free_unpacked(m, NULL);
	kvd_call_fail(c, KV_GRPC_UNIMPLEMENTED, MSG);
}

void kvd_svc_campaign(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *m)
{
	(void)s;
	unserved(c, m);
}

void kvd_svc_proclaim(struct kvd_server *s, struct kvd_call *c,
		      ProtobufCMessage *m)
{
	(void)s;
	unserved(c, m);
}

void kvd_svc_leader(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	(void)s;
	unserved(c, m);
}

void kvd_svc_resign(struct kvd_server *s, struct kvd_call *c,
		    ProtobufCMessage *m)
{
	(void)s;
	unserved(c, m);
}

static void observe_start(struct grpc_call *gc, const unsigned char *msg,
			  size_t len, void *data)
{
	(void)msg;
	(void)len;
	(void)data;
	grpc_call_finish(gc, GRPC_UNIMPLEMENTED, MSG);
}

const struct grpc_handler kvd_observe_grpc_h = { .on_start = observe_start };

void kvd_observe_http(struct kvd_server *s, struct http_request *req)
{
	(void)s;
	static const char body[] = "{\"error\":\"" MSG "\",\"message\":\"" MSG
				   "\",\"code\":12}";
	static const struct http_header h[] = {
		{ "Content-Type", "application/json" },
	};
	http_respond(req, 501, h, 1, body, sizeof(body) - 1);
}
