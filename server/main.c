/* kvd — one member of a kvd cluster (etcd 3.4 compatible flags). */
#include <signal.h>
#include <stdio.h>

#include "server/config.h"
#include "server/server.h"

int main(int argc, char **argv)
{
	struct kvd_config cfg;
	char err[512];
	int code;

	signal(SIGPIPE, SIG_IGN);
	switch (kvd_config_parse(argc, argv, &cfg, stdout, err, sizeof(err))) {
	case KVD_PARSE_EXIT:
		kvd_config_free(&cfg);
		return 0;
	case KVD_PARSE_ERROR:
		fprintf(stderr, "kvd: %s\n", err);
		kvd_config_free(&cfg);
		return 2;
	case KVD_PARSE_RUN:
		break;
	}
	code = kvd_server_run(&cfg);
	kvd_config_free(&cfg);
	return code;
}
