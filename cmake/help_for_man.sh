#!/bin/sh
# help2man's view of a gpushare program ($GPUSHARE_PROGRAM): its own output, with our
# "usage:" synopsis spelt as help2man reads it: "Usage: NAME ...", each further form
# on a line "  or: NAME ...", a form's wrapped tail joined to its line. So the man page
# gets a SYNOPSIS; the program's own text stays as it is.
set -e
out=$("$GPUSHARE_PROGRAM" "$@")
printf '%s\n' "$out" | awk -v name="$(basename "$GPUSHARE_PROGRAM")" '
  function flush() { if (form != "") print form; form = "" }
  in_usage && $0 ~ "^ +" name " " { flush(); sub(/^ +/, ""); form = "  or: " $0; next }
  in_usage && /^    [ ]*[^ -]/ { sub(/^ +/, " "); form = form $0; next }  # a wrapped form, not an option
  { flush(); in_usage = 0 }
  $0 ~ "^usage: " name " " { sub(/^usage:/, "Usage:"); form = $0; in_usage = 1; next }
  { print }
  END { flush() }'
