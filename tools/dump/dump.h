/* tools/dump/dump.h — kvd-dump subcommands.
 *
 * Each subcommand is a function taking the arguments after its name and
 * returning the process exit status: 0 when everything checked out, 1 on
 * corruption, 2 on usage or I/O errors. Output goes to stdout, diagnostics
 * to stderr. */
#ifndef KV_TOOLS_DUMP_H
#define KV_TOOLS_DUMP_H

struct dump_cmd {
	const char *name;
	const char *usage; /* arguments, e.g. "DIR" */
	const char *help;
	int (*run)(int argc, char **argv);
};

int dump_wal_main(int argc, char **argv);

#endif
