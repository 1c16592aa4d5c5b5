# cmake -DPROGRAM=<exe> -DNAME=<tool> -DOUTPUT=<file> -P gen_bash_completion.cmake
# Writes a bash completion for NAME from what `PROGRAM --help` prints: its long and
# short options; its subcommands (a bare lowercase word after NAME and its bracketed
# options on a "usage:" line); filenames after an option whose value is FILE, PATH or
# DIR; and after "--" (gpushare-run's command) commands and files.
foreach(var PROGRAM NAME OUTPUT)
  if(NOT ${var})
    message(FATAL_ERROR "gen_bash_completion: pass -D${var}=...")
  endif()
endforeach()
execute_process(COMMAND ${PROGRAM} --help OUTPUT_VARIABLE help RESULT_VARIABLE status)
if(NOT status EQUAL 0 OR help STREQUAL "")
  message(FATAL_ERROR "gen_bash_completion: `${PROGRAM} --help` failed (status ${status}) or printed nothing")
endif()

# Brackets and bars of the usage lines become blanks first: CMake lists and brackets do not mix.
string(REGEX REPLACE "[][()|,;]" " " plain "${help}")
string(REGEX MATCHALL "(^|[ \t\n])--?[a-zA-Z][a-zA-Z0-9-]*" found "${plain}")
set(options --version)
foreach(o IN LISTS found)
  string(STRIP "${o}" o)
  list(APPEND options ${o})
endforeach()
list(REMOVE_DUPLICATES options)
list(SORT options)

# Options followed by a value that names a file: "--config FILE", "--socket PATH".
string(REGEX MATCHALL "--[a-zA-Z][a-zA-Z0-9-]*[ =](FILE|PATH|DIR)" with_file "${plain}")
set(file_options "")
foreach(o IN LISTS with_file)
  string(REGEX REPLACE "[ =](FILE|PATH|DIR)$" "" o "${o}")
  list(APPEND file_options ${o})
endforeach()
list(REMOVE_DUPLICATES file_options)

set(subcommands "")
string(REGEX REPLACE "\\[[^]\n]*\\]" "" unbracketed "${help}")  # the optional groups
string(REGEX REPLACE "[][;]" " " unbracketed "${unbracketed}")  # strays: CMake lists
string(REPLACE "\n" ";" lines "${unbracketed}")
foreach(line IN LISTS lines)
  # What follows NAME and its optional groups on a usage line, if a bare word, is a subcommand.
  if(line MATCHES "^(usage:)?[ \t]*${NAME}[ \t]+(.*)$")
    string(STRIP "${CMAKE_MATCH_2}" rest)
    if(rest MATCHES "^([a-z][a-z0-9-]*)([ \t]|$)")
      list(APPEND subcommands ${CMAKE_MATCH_1})
    endif()
  endif()
endforeach()
list(REMOVE_DUPLICATES subcommands)

string(REPLACE "-" "_" function "_${NAME}")
list(JOIN options " " words)
list(JOIN subcommands " " subwords)
list(JOIN file_options "|" file_case)
if(file_case STREQUAL "")
  set(file_case "--no-file-option-")
endif()
file(WRITE "${OUTPUT}" "# bash completion for ${NAME}, generated from `${NAME} --help` at build time
# (cmake/gen_bash_completion.cmake): edit the program's usage text, not this file.
${function}() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} i
  for ((i = 1; i < COMP_CWORD; i++)); do
    if [[ \${COMP_WORDS[i]} == -- ]]; then
      COMPREPLY=(\$(compgen -c -- \"\$cur\"))
      return
    fi
  done
  case \$prev in
    ${file_case}) COMPREPLY=(\$(compgen -f -- \"\$cur\")); return ;;
  esac
  COMPREPLY=(\$(compgen -W \"${words} ${subwords}\" -- \"\$cur\"))
}
complete -o bashdefault -o default -F ${function} ${NAME}
")
