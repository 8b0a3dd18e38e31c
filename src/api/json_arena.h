/* A per-thread bump arena for jansson, used while one request is handled.
 *
 * Parsing a publish batch with jansson builds a DOM: several small mallocs per
 * event (objects, hashtable buckets, strings), then as many frees. On a busy
 * worker that allocator traffic was a third of heraldd's CPU. Between
 * hd_json_arena_begin() and hd_json_arena_end() every jansson allocation of the
 * calling thread comes from one arena instead, and its frees cost nothing;
 * end releases it all at once.
 *
 * Rules: a jansson value (or a string from json_dumps) allocated inside the
 * window must be dead before hd_json_arena_end(); free such strings with
 * hd__json_free(), never free(). Other threads, and this thread outside the
 * window, get malloc/free as before. A thread keeps at most
 * HD_JSON_ARENA_KEEP bytes cached between windows.
 */
#ifndef HD_API_JSON_ARENA_H
#define HD_API_JSON_ARENA_H

#include <stddef.h>

#define HD_JSON_ARENA_KEEP  (1024 * 1024)
#define HD_JSON_ARENA_CHUNK (64 * 1024) /* the first chunk; each next one doubles */

/* Installs the arena-aware allocator into jansson; once, before threads start.
 * Values allocated before it are still freed correctly. */
void hd_json_arena_install(void);

void hd_json_arena_begin(void);
void hd_json_arena_end(void);

/* Gives back what this thread keeps cached; a thread calls it before it exits. */
void hd_json_arena_release(void);

/* Bytes this thread's arena holds right now (tests). */
size_t hd_json_arena_held(void);

#endif
