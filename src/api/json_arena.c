/* The per-thread jansson arena (see json_arena.h).
 *
 * Chunks are malloc'ed, each at least twice the size of the one before, so a
 * request needing N bytes makes O(log N) mallocs. Allocations are 16-byte
 * aligned. The free hook asks "is this pointer inside one of my chunks?":
 * if so it is a no-op, else the pointer came from malloc and goes to free().
 * That holds on any thread and in or out of the window, so installing the
 * hooks late, or a value crossing from malloc into the window, is safe.
 *
 * Under AddressSanitizer a closed window poisons its chunks, so a value used
 * after hd_json_arena_end() is reported like a use after free.
 */
#include "api/json_arena.h"

#include <assert.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#if defined(__SANITIZE_ADDRESS__)
#define HD_ARENA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HD_ARENA_ASAN 1
#endif
#endif
#ifdef HD_ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n)   ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define ALIGN 16

typedef struct chunk_s {
  struct chunk_s *next; /* the older, smaller chunks */
  size_t cap, used;
  alignas(ALIGN) unsigned char data[];
} chunk_t;

static _Thread_local struct {
  chunk_t *head; /* the newest (largest) chunk */
  bool open;
} arena;

static bool owned(const void *p) {
  for (const chunk_t *c = arena.head; c; c = c->next)
    if ((uintptr_t)p - (uintptr_t)c->data < c->cap) return true;
  return false;
}

static void *arena_alloc(size_t n) {
  chunk_t *c = arena.head;
  void *p;

  if (!arena.open) return malloc(n);
  if (n > SIZE_MAX / 2 - sizeof(chunk_t)) return NULL;
  /* Never 0 bytes: a block must lie inside its chunk for arena_free to know it. */
  n = n ? (n + ALIGN - 1) & ~(size_t)(ALIGN - 1) : ALIGN;
  if (c == NULL || c->cap - c->used < n) {
    size_t cap = c ? c->cap * 2 : HD_JSON_ARENA_CHUNK;
    chunk_t *fresh;
    while (cap < n) cap *= 2;
    if ((fresh = malloc(sizeof(*fresh) + cap)) == NULL) return NULL;
    fresh->next = c;
    fresh->cap = cap;
    fresh->used = 0;
    POISON(fresh->data, cap);
    arena.head = c = fresh;
  }
  p = c->data + c->used;
  c->used += n;
  UNPOISON(p, n);
  return p;
}

static void arena_free(void *p) {
  if (p != NULL && !owned(p)) free(p);
}

void hd_json_arena_install(void) {
  json_set_alloc_funcs(arena_alloc, arena_free);
}

void hd_json_arena_begin(void) {
  assert(!arena.open);
  arena.open = true;
}

void hd_json_arena_end(void) {
  chunk_t *keep = arena.head, *c;

  assert(arena.open);
  arena.open = false;
  if (keep == NULL) return;
  /* Keep the largest chunk for the next request if it is not too big. */
  if (keep->cap > HD_JSON_ARENA_KEEP) keep = NULL;
  c = keep ? keep->next : arena.head;
  while (c) {
    chunk_t *next = c->next;
    free(c);
    c = next;
  }
  arena.head = keep;
  if (keep) {
    keep->next = NULL;
    keep->used = 0;
    POISON(keep->data, keep->cap);
  }
}

void hd_json_arena_release(void) {
  assert(!arena.open);
  if (arena.head) assert(arena.head->next == NULL);
  free(arena.head);
  arena.head = NULL;
}

size_t hd_json_arena_held(void) {
  size_t n = 0;
  for (const chunk_t *c = arena.head; c; c = c->next) n += c->cap;
  return n;
}
