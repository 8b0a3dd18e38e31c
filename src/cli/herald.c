/* herald: the command-line tool. */
#include <stdio.h>
#include <string.h>

#include "herald/herald.h"

static int usage(FILE *out) {
  fputs("usage: herald <command>\n"
        "  version     print the version\n",
        out);
  return out == stdout ? 0 : 2;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage(stderr);
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    printf("herald %s\n", hd_version());
    return 0;
  }
  if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) return usage(stdout);
  fprintf(stderr, "herald: unknown command '%s'\n", argv[1]);
  return usage(stderr);
}
