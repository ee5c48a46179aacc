/* replay_main.c — a main() for the fuzz harnesses in builds without
 * libFuzzer: feeds each file named on the command line to
 * LLVMFuzzerTestOneInput once, in order, so ctest replays the seed and
 * regression inputs of every target under ASan/UBSan in the ordinary
 * Debug build. Exit 0 when every input ran (a harness aborts on a
 * violated invariant; the sanitizers abort on memory errors), 2 when a
 * file cannot be read. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL) {
		perror(path);
		return 2;
	}
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			uint8_t *nb = realloc(buf, cap);
			if (nb == NULL) {
				free(buf);
				fclose(f);
				return 2;
			}
			buf = nb;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	/* a copy of exactly len bytes, so ASan sees reads past the input */
	uint8_t *in = malloc(len ? len : 1);
	if (in == NULL) {
		free(buf);
		return 2;
	}
	for (size_t i = 0; i < len; i++)
		in[i] = buf[i];
	free(buf);
	LLVMFuzzerTestOneInput(in, len);
	free(in);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = 0;

	for (int i = 1; i < argc; i++) {
		if (run_file(argv[i]) != 0)
			rc = 2;
	}
	printf("replayed %d inputs\n", argc - 1);
	return rc;
}
