/* Compile-only probes for mission-critical tests 2 and 3 (never linked).
 *
 * Built by expect_compile.cmake with -fsyntax-only; which probe depends on
 * HD_PROBE (unset: the control, which must compile, so a failing probe fails
 * for its own reason and not because of a missing header or a bad flag).
 *
 *   HD_PROBE=1  a hand-written double that lost a parameter of
 *               hd_manager_presence (the seed's "different method signatures")
 *   HD_PROBE=2  a hand-written double with another return type
 *   HD_PROBE=3  a hook of another type stored in the double's hook slot
 *   HD_PROBE=4  a second manager made by the embedder: the type is opaque
 *   HD_PROBE=5  a table of the API with an op the list does not have (the
 *               seed's "extra methods")
 * Each of 1..5 must fail to compile with the expected diagnostic.
 */
#include <stdlib.h>

#include "herald/herald.h"
#include "support/manager_double.h"

#if !defined(HD_PROBE)
/* Control: the same shapes, correct. A hand-written definition with the
 * generated signature is compatible with the generated declaration. */
size_t hd_double_hd_manager_presence(hd_manager_t *m, const char *user_id) {
  return hd_double.hd_manager_presence.hook
             ? hd_double.hd_manager_presence.hook(m, user_id)
             : 0;
}
static size_t presence_hook(hd_manager_t *m, const char *user_id) {
  return 0;
}
void probe(void);
void probe(void) {
  hd_manager_t *one = hd_manager_get();
  hd_manager_api_t api = *hd_manager_api();
  hd_double.hd_manager_presence.hook = presence_hook;
  (void)one;
  (void)api;
}
#elif HD_PROBE == 1
size_t hd_double_hd_manager_presence(hd_manager_t *m) {
  return 0;
}
#elif HD_PROBE == 2
int hd_double_hd_manager_presence(hd_manager_t *m, const char *user_id) {
  return 0;
}
#elif HD_PROBE == 3
static size_t presence_hook(hd_manager_t *m) {
  return 0;
}
void probe(void);
void probe(void) {
  hd_double.hd_manager_presence.hook = presence_hook;
}
#elif HD_PROBE == 4
void probe(void);
void probe(void) {
  hd_manager_t *second = malloc(sizeof(hd_manager_t));
  free(second);
}
#elif HD_PROBE == 5
static size_t extra(hd_manager_t *m) {
  return 0;
}
void probe(void);
void probe(void) {
  hd_manager_api_t api = {.hd_manager_presence = NULL, .hd_manager_extra_op = extra};
  (void)api;
}
#endif
