/* A recording test double of the manager, generated from HD_MANAGER_OPS.
 *
 * For every operation `ret name params` in include/herald/manager.h this header
 * declares, through the X-macro and nothing else:
 *
 *   ret hd_double_<name> params;        the double, with exactly the op's signature
 *   hd_double.<name>.calls              how many times it was called (atomic)
 *   hd_double.<name>.hook               optional, of type ret (*) params: when set,
 *                                       the double forwards to it and returns its
 *                                       result (observe arguments, provide results,
 *                                       or set it to the real op to delegate)
 *
 * Without a hook an op returns the zero value of its return type.
 * hd_manager_double_api() returns the doubles as an hd_manager_api_t, the same
 * table type as hd_manager_api().
 *
 * Drift. No signature is written by hand here or in manager_double.c: adding,
 * removing or changing an op in HD_MANAGER_OPS changes the double with it.
 * Code that hand-writes an op of the double with another signature conflicts
 * with the generated declaration and fails to compile (the mission-critical
 * test mission_critical/2_double_drift_fails_to_compile proves it).
 *
 * Threads: counters are atomic; hooks are plain pointers, set them before
 * starting threads. hd_manager_double_reset() is not thread-safe.
 */
#ifndef HD_TEST_MANAGER_DOUBLE_H
#define HD_TEST_MANAGER_DOUBLE_H

#include <stdatomic.h>

#include "herald/manager.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The per-op recording state, one member per op, named after the op. */
typedef struct hd_double_s {
#define HD__DOUBLE_STATE(ret, name, params, args)                                        \
  struct {                                                                               \
    atomic_ulong calls;                                                                  \
    ret(*hook) params;                                                                   \
  } name;
  HD_MANAGER_OPS(HD__DOUBLE_STATE)
#undef HD__DOUBLE_STATE
} hd_double_t;

extern hd_double_t hd_double;

/* The doubles themselves: hd_double_<op>, with the op's exact signature. */
#define HD__DOUBLE_PROTO(ret, name, params, args) ret hd_double_##name params;
HD_MANAGER_OPS(HD__DOUBLE_PROTO)
#undef HD__DOUBLE_PROTO

/* The number of operations in HD_MANAGER_OPS (counted from the list itself). */
#define HD__DOUBLE_ONE(ret, name, params, args) +1
enum { HD_MANAGER_NOPS = 0 HD_MANAGER_OPS(HD__DOUBLE_ONE) };
#undef HD__DOUBLE_ONE

/* The doubles as a table; same type as hd_manager_api(). */
const hd_manager_api_t *hd_manager_double_api(void);

/* Zeroes every counter and clears every hook. */
void hd_manager_double_reset(void);

/* The sum of all ops' counters. */
unsigned long hd_manager_double_total_calls(void);

#ifdef __cplusplus
}
#endif
#endif
