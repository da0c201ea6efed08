# Target helpers: one static library per component folder, one gtest binary per test folder.
#
#   agent_add_library(<name> SRCS a.cpp b.cpp DEPS dep1 dep2 [PUBLIC_DEPS ...])
#     -> static library <name> with alias dt::<name>, C++20, project warnings, root-relative includes.
#   agent_add_test(<name> SRCS x_test.cpp DEPS dt::foo [LABELS unit])
#     -> gtest executable registered with CTest through gtest_discover_tests.

function(agent_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wcast-align -Wformat=2 -Wimplicit-fallthrough)
  if(DATERA_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
  # GCC 12 reports a false -Wmismatched-new-delete on Asio's awaitable frames (class-specific
  # operator new/delete seen through inlining; GCC PR middle-end/109224, asio issue #1391).
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
  endif()
  # GCC 12 at -O3 (Release) reports a false -Wrestrict inside std::string's operator+ (GCC PR
  # tree-optimization/105651, fixed in 13); -Werror made Release builds of base fail.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
endfunction()

function(agent_add_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  add_library(dt::${name} ALIAS ${name})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_DEPS})
  agent_set_warnings(${name})
endfunction()

function(agent_add_executable name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  agent_set_warnings(${name})
endfunction()

function(agent_add_test name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest GTest::gtest_main)
  agent_set_warnings(${name})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  include(GoogleTest)
  gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABELS}" DISCOVERY_TIMEOUT 30)
  # `cmake --build B --target unit-tests` builds the unit tier alone (the sanitizer tier does).
  if("unit" IN_LIST ARG_LABELS)
    if(NOT TARGET unit-tests)
      add_custom_target(unit-tests)
    endif()
    add_dependencies(unit-tests ${name})
  endif()
endfunction()
