# Runs the C compiler on one probe and checks the outcome (cmake -P).
#   -DCC=...      the compiler
#   -DSRC=...     the probe source
#   -DROOT=...    the project root (include paths)
#   -DPROBE=N     the probe to select (unset/empty: the control)
#   -DEXPECT=ok|fail
#   -DREGEX=...   with fail: the diagnostic that must appear (so a probe cannot
#                 "fail as expected" for an unrelated reason such as a typo)
set(args -std=c17 -fsyntax-only -Werror=incompatible-pointer-types
    -Werror=implicit-function-declaration -I${ROOT}/include -I${ROOT}/src -I${ROOT}/tests)
if(PROBE)
  list(APPEND args -DHD_PROBE=${PROBE})
endif()
execute_process(COMMAND ${CC} ${args} ${SRC} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE out)
message("${CC} ${args} ${SRC}\n-> exit ${rc}\n${out}")
if(EXPECT STREQUAL "ok")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the control probe must compile")
  endif()
else()
  if(rc EQUAL 0)
    message(FATAL_ERROR "probe ${PROBE} compiled: the drift it injects was not caught")
  endif()
  if(NOT out MATCHES "${REGEX}")
    message(FATAL_ERROR "probe ${PROBE} failed, but not with /${REGEX}/")
  endif()
endif()
