/* The recording manager double (see manager_double.h). Every definition in
 * this file is generated from HD_MANAGER_OPS; nothing names an op by hand.
 *
 * The one wrinkle is the return type: an op returning void may neither
 * declare a result variable nor `return expr;`. HD__IS_VOID(ret) tells the
 * two apart in the preprocessor: it pastes HD__PROBE_ onto ret and appends
 * "()"; only for exactly `void` does that form the invocation
 * HD__PROBE_void(), which expands to "~, 1" and makes the second element 1.
 * Any other return type (hd_scope_t, size_t, const char *, void *: the "*"
 * stands between the name and the parentheses) leaves 0.
 */
#include <string.h>

#include "support/manager_double.h"

#define HD__CAT(a, ...)           HD__CAT_(a, __VA_ARGS__)
#define HD__CAT_(a, ...)          a##__VA_ARGS__
#define HD__SECOND(...)           HD__SECOND_(__VA_ARGS__, 0, 0)
#define HD__SECOND_(a, b, ...)    b
#define HD__PROBE_void()          ~, 1
#define HD__IS_VOID(ret)          HD__SECOND(HD__CAT_(HD__PROBE_, ret)())
#define HD__IF(c)                 HD__CAT(HD__IF_, c)
#define HD__IF_1(then, otherwise) then
#define HD__IF_0(then, otherwise) otherwise

hd_double_t hd_double;

#define HD__DOUBLE_DEF(ret, name, params, args)                                          \
  ret hd_double_##name params {                                                          \
    atomic_fetch_add(&hd_double.name.calls, 1);                                          \
    HD__IF(HD__IS_VOID(ret))                                                             \
    (if (hd_double.name.hook) hd_double.name.hook args;, ret result_ = {0};              \
     if (hd_double.name.hook) result_ = hd_double.name.hook args; return result_;)       \
  }
HD_MANAGER_OPS(HD__DOUBLE_DEF)
#undef HD__DOUBLE_DEF

const hd_manager_api_t *hd_manager_double_api(void) {
  /* Designated initializers: each double lands in the field of its own name,
   * and a type mismatch is an incompatible-pointer error. */
  static const hd_manager_api_t api = {
#define HD__DOUBLE_FIELD(ret, name, params, args) .name = hd_double_##name,
      HD_MANAGER_OPS(HD__DOUBLE_FIELD)
#undef HD__DOUBLE_FIELD
  };
  return &api;
}

void hd_manager_double_reset(void) {
#define HD__DOUBLE_RESET(ret, name, params, args)                                        \
  atomic_store(&hd_double.name.calls, 0);                                                \
  hd_double.name.hook = NULL;
  HD_MANAGER_OPS(HD__DOUBLE_RESET)
#undef HD__DOUBLE_RESET
}

unsigned long hd_manager_double_total_calls(void) {
  unsigned long n = 0;
#define HD__DOUBLE_SUM(ret, name, params, args) n += atomic_load(&hd_double.name.calls);
  HD_MANAGER_OPS(HD__DOUBLE_SUM)
#undef HD__DOUBLE_SUM
  return n;
}
