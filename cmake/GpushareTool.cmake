# gpushare_tool(TARGET SUMMARY "one line" [SECTION 1|8]): what makes an executable a
# gpushare program. It lands in build/bin, installs to bin/, and gets a man page and a
# bash completion generated from its own --help (and --version) at build time, so a new
# tool (gpushare-cdi, gpushare-device-plugin) is one call and its docs cannot drift from
# its options. Every such program must answer --help and --version on stdout, status 0.
include_guard(GLOBAL)
include(GNUInstallDirs)

# help2man (Debian: help2man) writes the man pages. Required: the install tree and the
# .deb carry a page for every program; -DGPUSHARE_MAN_PAGES=OFF builds without them.
option(GPUSHARE_MAN_PAGES "Generate man pages from --help with help2man" ON)
if(GPUSHARE_MAN_PAGES)
  find_program(GPUSHARE_HELP2MAN help2man)
  if(NOT GPUSHARE_HELP2MAN)
    message(FATAL_ERROR "help2man not found: install it (apt-get install help2man) or configure with "
                        "-DGPUSHARE_MAN_PAGES=OFF (no man pages are then built or installed)")
  endif()
endif()

set(GPUSHARE_COMPLETION_GENERATOR ${CMAKE_CURRENT_LIST_DIR}/gen_bash_completion.cmake)
set(GPUSHARE_HELP_FOR_MAN ${CMAKE_CURRENT_LIST_DIR}/help_for_man.sh)

function(gpushare_tool target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "SUMMARY;SECTION" "")
  if(NOT arg_SUMMARY)
    message(FATAL_ERROR "gpushare_tool(${target}): SUMMARY is required (the man page's NAME line)")
  endif()
  if(NOT arg_SECTION)
    set(arg_SECTION 1)
  endif()
  set_target_properties(${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
  # The install tree test (tests/install) expects exactly these programs in bin/.
  set_property(GLOBAL APPEND PROPERTY GPUSHARE_TOOLS ${target})
  install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

  set(completion ${CMAKE_BINARY_DIR}/share/bash-completion/completions/${target})
  add_custom_command(OUTPUT ${completion}
                     COMMAND ${CMAKE_COMMAND} -DPROGRAM=$<TARGET_FILE:${target}> -DNAME=${target}
                             -DOUTPUT=${completion} -P ${GPUSHARE_COMPLETION_GENERATOR}
                     DEPENDS ${target} ${GPUSHARE_COMPLETION_GENERATOR}
                     COMMENT "bash completion for ${target} from its --help" VERBATIM)
  set(outputs ${completion})
  install(FILES ${completion} DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)

  if(GPUSHARE_MAN_PAGES)
    set(man ${CMAKE_BINARY_DIR}/share/man/man${arg_SECTION}/${target}.${arg_SECTION})
    file(MAKE_DIRECTORY ${CMAKE_BINARY_DIR}/share/man/man${arg_SECTION})
    add_custom_command(OUTPUT ${man}
                       COMMAND ${CMAKE_COMMAND} -E env GPUSHARE_PROGRAM=$<TARGET_FILE:${target}>
                               ${GPUSHARE_HELP2MAN} --no-info --section=${arg_SECTION} --name=${arg_SUMMARY}
                               --source=gpushare --output=${man} ${GPUSHARE_HELP_FOR_MAN}
                       DEPENDS ${target} ${GPUSHARE_HELP_FOR_MAN}
                       COMMENT "man page ${target}(${arg_SECTION}) from its --help" VERBATIM)
    list(APPEND outputs ${man})
    install(FILES ${man} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${arg_SECTION})
  endif()
  add_custom_target(${target}_docs ALL DEPENDS ${outputs})
endfunction()
