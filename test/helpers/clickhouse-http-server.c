/*
 * A ClickHouse server's HTTP interface for the HTTP-backend tests, with no
 * download: libchdb (the ClickHouse 26.x build the embedded backend uses,
 * from the chdb npm package) run as clickhouse-local, which starts its HTTP
 * listener on SYSTEM START LISTEN HTTP, then a query that sleeps until the
 * process is killed keeps it serving. (chDB's in-process connection API
 * refuses to start listeners; the command-line entry point allows it.)
 *
 *   clickhouse-http-server LIBCHDB_SO DATA_DIR PORT
 */
#include <dlfcn.h>
#include <stdio.h>

typedef void *(*query_cmdline_t)(int, char **);
typedef const char *(*result_error_t)(void *);

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s LIBCHDB_SO DATA_DIR PORT\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
  if (lib == NULL) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  query_cmdline_t query = (query_cmdline_t)dlsym(lib, "chdb_query_cmdline");
  result_error_t error = (result_error_t)dlsym(lib, "chdb_result_error");
  if (query == NULL || error == NULL) {
    fprintf(stderr, "libchdb lacks chdb_query_cmdline/chdb_result_error\n");
    return 1;
  }
  char path[4096], port[64];
  snprintf(path, sizeof path, "--path=%s", argv[2]);
  snprintf(port, sizeof port, "--http_port=%s", argv[3]);
  char *args[] = {
    "clickhouse", path, port, "--listen_host=127.0.0.1", "--multiquery", "--query",
    "SYSTEM START LISTEN HTTP; "
    "SELECT sleepEachRow(1) FROM numbers(1000000000) SETTINGS function_sleep_max_microseconds_per_block = 0",
  };
  void *result = query((int)(sizeof args / sizeof args[0]), args);
  const char *err = result == NULL ? "no result" : error(result);
  if (err != NULL) fprintf(stderr, "clickhouse-local: %s\n", err);
  return err == NULL ? 0 : 1;
}
