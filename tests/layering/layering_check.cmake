# The layers' arrows (docs/architecture.md) as a test, so they cannot rot: every
# #include of a file under ROOT/common, ROOT/broker and ROOT/shim is resolved (next to
# the including file, else from ROOT) and must stay inside what its layer may use:
#   common/        common/ only (it depends on nothing else of ours);
#   broker/        common/ and broker/ (never hooks/, shim/, tools/ or tests/);
#     policy/      common/ and broker/policy/, and no library loading or shared memory;
#     core/        not broker/io/;
#   shim/          common/ and shim/ (never broker/ or hooks/).
# Includes that resolve to nothing of ours (system and third-party headers) are free.
# Run: cmake -DROOT=<source tree> -P layering_check.cmake (exits non-zero on a breach).
cmake_minimum_required(VERSION 3.22)
if(NOT ROOT)
  message(FATAL_ERROR "layering_check: pass -DROOT=<source tree>")
endif()
get_filename_component(ROOT "${ROOT}" ABSOLUTE)

set(breaches 0)
# allowed: folders (relative to ROOT) an include may resolve into; banned_system: system
# headers the layer may not use.
function(check_layer layer allowed banned_system)
  file(GLOB_RECURSE files "${ROOT}/${layer}/*.h" "${ROOT}/${layer}/*.cpp" "${ROOT}/${layer}/*.def"
       "${ROOT}/${layer}/*.S")
  foreach(file IN LISTS files)
    file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"][^>\"]+[>\"]")
    get_filename_component(dir "${file}" DIRECTORY)
    file(RELATIVE_PATH rel_file "${ROOT}" "${file}")
    foreach(line IN LISTS lines)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"]+)[>\"].*" "\\1" inc "${line}")
      foreach(banned IN LISTS banned_system)
        if(inc MATCHES "${banned}")
          message(SEND_ERROR "${rel_file}: includes <${inc}>, which ${layer}/ may not use")
          math(EXPR breaches "${breaches} + 1")
        endif()
      endforeach()
      set(resolved "")
      if(EXISTS "${dir}/${inc}" AND NOT IS_DIRECTORY "${dir}/${inc}")
        get_filename_component(resolved "${dir}/${inc}" ABSOLUTE)
      elseif(EXISTS "${ROOT}/${inc}" AND NOT IS_DIRECTORY "${ROOT}/${inc}")
        get_filename_component(resolved "${ROOT}/${inc}" ABSOLUTE)
      endif()
      if(resolved STREQUAL "")
        continue()  # not ours
      endif()
      file(RELATIVE_PATH target "${ROOT}" "${resolved}")
      set(ok FALSE)
      foreach(prefix IN LISTS allowed)
        string(FIND "${target}" "${prefix}" at)
        if(at EQUAL 0)
          set(ok TRUE)
        endif()
      endforeach()
      if(NOT ok)
        message(SEND_ERROR "${rel_file}: includes ${target}, outside what ${layer}/ may use (${allowed})")
        math(EXPR breaches "${breaches} + 1")
      endif()
    endforeach()
  endforeach()
  set(breaches ${breaches} PARENT_SCOPE)
endfunction()

set(no_io "^dlfcn\\.h$;^sys/mman\\.h$;^boost/interprocess/")
check_layer(common "common/" "")
check_layer(broker/policy "common/;broker/policy/" "${no_io}")
check_layer(broker/core "common/;broker/policy/;broker/core/" "${no_io}")
check_layer(broker "common/;broker/" "")
check_layer(shim "common/;shim/" "")

if(breaches GREATER 0)
  message(FATAL_ERROR "layering_check: ${breaches} include(s) against the layers")
endif()
message(STATUS "layering_check: the layers' arrows hold")
