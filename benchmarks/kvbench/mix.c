/* apiserver-mix: not written yet. */
#include <stdio.h>

#include "kvbench.h"

int mix_main(struct kb_opts *o) {
  fprintf(stderr, "kvbench: apiserver-mix is not implemented yet\n");
  return 64;
}
