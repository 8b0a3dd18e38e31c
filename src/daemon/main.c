/* heraldd: parse the configuration, start the workers, serve until SIGTERM. */
#include <signal.h>
#include <stdio.h>

#include <uv.h>

#include "core/config.h"
#include "daemon/log.h"
#include "net/net.h"

int main(int argc, char **argv) {
  hd_config_t cfg;
  hd_server_t srv;
  char err[256] = "";
  int rc;

  signal(SIGPIPE, SIG_IGN);
  hd_config_defaults(&cfg);
  rc = hd_config_from_args(&cfg, argc, argv, err, sizeof(err));
  if (rc == 1) return 0;
  if (rc != 0) {
    fprintf(stderr, "heraldd: %s\n", err);
    return 2;
  }
  if ((rc = hd_server_init(&srv, &cfg, uv_default_loop())) != 0) {
    hd_log(HD_LOG_ERROR, "cannot start: %s", uv_strerror(rc));
    return 1;
  }
  if (cfg.echo_path) hd_log(HD_LOG_INFO, "echo endpoint at %s (testing only)", cfg.echo_path);
  rc = hd_server_run(&srv);
  hd_server_dispose(&srv);
  uv_loop_close(uv_default_loop());
  hd_config_dispose(&cfg);
  return rc == 0 ? 0 : 1;
}
