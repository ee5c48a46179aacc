# kv_module(NAME <target> SOURCES ... [DEPS ...] [FORBID ...])
#
# Declares one module library. Its public headers live in
# <module>/include/<module>/ and are visible only to targets that link it
# (the module rule, DESIGN.md). DEPS are other kv modules or imported
# pkg-config targets it may use. FORBID names system headers the module must
# not include: for each, a poison header that fails with #error is put
# first on the module's include path, so a forbidden include fails to build.
function(kv_module)
  cmake_parse_arguments(M "" "NAME;DIR" "SOURCES;DEPS;FORBID" ${ARGN})
  if(NOT M_DIR)
    set(M_DIR ${CMAKE_CURRENT_SOURCE_DIR})
  endif()
  add_library(${M_NAME} STATIC ${M_SOURCES})
  target_include_directories(${M_NAME} PUBLIC ${M_DIR}/include)
  target_link_libraries(${M_NAME} PRIVATE ${M_DEPS})
  # Dependencies' headers are needed by users of our headers only when our
  # public headers include them; modules say so with kv_module_export().
  if(M_FORBID)
    kv_poison_dir(${M_NAME} "${M_FORBID}" poison)
    target_include_directories(${M_NAME} BEFORE PRIVATE ${poison})
  endif()
endfunction()

# kv_module_export(<target> <dep>...): <target>'s public headers include
# <dep>'s, so users of <target> see them too.
function(kv_module_export target)
  target_link_libraries(${target} PUBLIC ${ARGN})
endfunction()

# Writes #error headers for each forbidden header into a per-target dir.
function(kv_poison_dir target headers outvar)
  set(dir ${CMAKE_BINARY_DIR}/poison/${target})
  foreach(h ${headers})
    get_filename_component(sub ${h} DIRECTORY)
    file(MAKE_DIRECTORY ${dir}/${sub})
    file(WRITE ${dir}/${h}
      "#error \"module ${target} must not include <${h}> (module rule, DESIGN.md)\"\n")
  endforeach()
  set(${outvar} ${dir} PARENT_SCOPE)
endfunction()

# The system headers of each dependency, for FORBID lists.
set(KV_HDR_UV uv.h)
set(KV_HDR_SSL openssl/ssl.h openssl/err.h openssl/evp.h openssl/x509.h)
set(KV_HDR_RAFT raft.h raft/uv.h raft/fixture.h)
set(KV_HDR_LMDB lmdb.h)
set(KV_HDR_HTTP llhttp.h nghttp2/nghttp2.h)
set(KV_HDR_PROTO protobuf-c/protobuf-c.h)
set(KV_HDR_JSON jansson.h)
set(KV_HDR_SOCK sys/socket.h netinet/in.h arpa/inet.h)

# kv_unit_test(<name> SOURCES ... [DEPS ...] [TIMEOUT s]): one cmocka
# executable, one ctest test, run from the build dir with a timeout.
function(kv_unit_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;DEPS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_DEPS} PkgConfig::CMOCKA)
  set_target_properties(${name} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "KV_SOURCE_DIR=${CMAKE_SOURCE_DIR};KV_BUILD_DIR=${CMAKE_BINARY_DIR}")
endfunction()

# kv_rule_probe(<name> <module> <source> <regex>): a ctest test that
# compiles <source> with exactly <module>'s include path and link list (as
# if it were one of the module's files) and passes only when the compiler
# output matches <regex> (BUILDS: the probe itself compiled). Used to prove that forbidden includes fail and
# allowed ones build.
function(kv_rule_probe name module src regex)
  add_library(${name} OBJECT EXCLUDE_FROM_ALL ${src})
  get_target_property(inc ${module} INCLUDE_DIRECTORIES)
  get_target_property(libs ${module} LINK_LIBRARIES)
  target_include_directories(${name} BEFORE PRIVATE ${inc})
  if(libs)
    target_link_libraries(${name} PRIVATE ${libs})
  endif()
  if(regex STREQUAL "BUILDS")
    # Dependencies print "Built target <dep>" too: match this probe's own.
    set(regex "Built target ${name}")
  endif()
  add_test(NAME ${name}
    COMMAND ${CMAKE_COMMAND} --build ${CMAKE_BINARY_DIR} --target ${name})
  set_tests_properties(${name} PROPERTIES RUN_SERIAL TRUE TIMEOUT 120
    PASS_REGULAR_EXPRESSION "${regex}")
endfunction()
