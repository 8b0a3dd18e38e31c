/* herald: the command-line tool.
 *
 *   herald user add  --users FILE NAME   create or change NAME; the password is
 *                                        the first line of stdin (not echoed on
 *                                        a terminal)
 *   herald user del  --users FILE NAME
 *   herald user list --users FILE
 *   herald version
 */
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "auth/users.h"
#include "herald/herald.h"

static int usage(FILE *out) {
  fputs("usage: herald <command>\n"
        "  user add  --users FILE NAME   create or update a user (password on stdin)\n"
        "  user del  --users FILE NAME   remove a user\n"
        "  user list --users FILE        list user names\n"
        "  version                       print the version\n",
        out);
  return out == stdout ? 0 : 2;
}

/* Reads the first line of stdin; on a terminal, without echo. */
static int read_password(char *buf, size_t cap, size_t *len) {
  struct termios old, quiet;
  bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
  char *nl;

  if (tty) {
    fputs("password: ", stderr);
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  char *ok = fgets(buf, (int)cap, stdin);
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fputc('\n', stderr);
  }
  if (ok == NULL) return -1;
  if ((nl = strchr(buf, '\n')) != NULL)
    *nl = '\0';
  else if (!feof(stdin))
    return -1; /* longer than the buffer */
  if ((nl = strchr(buf, '\r')) != NULL) *nl = '\0';
  *len = strlen(buf);
  return 0;
}

static void print_name(const char *name, void *arg) {
  (void)arg;
  puts(name);
}

static int user_cmd(int argc, char **argv) {
  const char *file = NULL, *name = NULL, *verb;
  char err[512] = "", pw[1024];
  size_t plen = 0;
  int rc;

  if (argc < 1) return usage(stderr);
  verb = argv[0];
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--users") == 0 && i + 1 < argc)
      file = argv[++i];
    else if (argv[i][0] != '-' && name == NULL)
      name = argv[i];
    else
      return usage(stderr);
  }
  if (file == NULL) {
    fprintf(stderr, "herald user %s: --users FILE is required\n", verb);
    return 2;
  }
  if (strcmp(verb, "list") == 0) {
    rc = hd_users_file_list(file, print_name, NULL, err, sizeof(err));
  } else if (name == NULL) {
    return usage(stderr);
  } else if (strcmp(verb, "add") == 0) {
    if (read_password(pw, sizeof(pw), &plen) != 0) {
      fprintf(stderr,
              "herald user add: no password on stdin (or longer than %zu bytes)\n",
              sizeof(pw) - 2);
      return 1;
    }
    rc = hd_users_file_add(file, name, pw, plen, err, sizeof(err));
    sodium_memzero(pw, sizeof(pw));
    if (rc == 0) fprintf(stderr, "herald: user '%s' saved in %s\n", name, file);
  } else if (strcmp(verb, "del") == 0) {
    rc = hd_users_file_del(file, name, err, sizeof(err));
    if (rc == 0) fprintf(stderr, "herald: user '%s' removed from %s\n", name, file);
  } else {
    return usage(stderr);
  }
  if (rc != 0)
    fprintf(stderr, "herald user %s: %s\n", verb, err[0] ? err : hd_strerror(rc));
  return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage(stderr);
  if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0) {
    printf("herald %s\n", hd_version());
    return 0;
  }
  if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0)
    return usage(stdout);
  if (strcmp(argv[1], "user") == 0) return user_cmd(argc - 2, argv + 2);
  fprintf(stderr, "herald: unknown command '%s'\n", argv[1]);
  return usage(stderr);
}
