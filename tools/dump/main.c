/* kvd-dump: offline inspection of kvd's on-disk files.
 *
 *   kvd-dump wal DIR      segments, records and meta of a WAL directory
 *
 * Subcommands live in a table; add one by writing its dump_*_main() in its
 * own file and listing it here. */
#include <stdio.h>
#include <string.h>

#include "dump.h"

static const struct dump_cmd cmds[] = {
	{ "wal", "[-q] DIR",
	  "print the WAL's segments, records and meta file and verify every "
	  "checksum (-q: summary only)",
	  dump_wal_main },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: kvd-dump COMMAND ARGS...\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(out, "  %s %s\n      %s\n", cmds[i].name, cmds[i].usage,
			cmds[i].help);
	fprintf(out, "\nexit status: 0 ok, 1 corruption found, 2 usage or "
		     "I/O error\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (strcmp(argv[1], cmds[i].name) == 0)
			return cmds[i].run(argc - 2, argv + 2);
	fprintf(stderr, "kvd-dump: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
