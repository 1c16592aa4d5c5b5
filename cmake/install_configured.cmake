# Runs at install time, from install(CODE) in deploy/CMakeLists.txt, when the prefix is
# known (`cmake --install build --prefix P`, or /usr for the .deb): installs the files
# that name paths of the install. In: SOURCE_DIR (deploy/), WORK_DIR (a build folder),
# BINDIR, UNITDIR (relative to the prefix, or absolute).
#   - the systemd unit, its ExecStart pointing at this install's broker and config;
#   - the example config: PREFIX/etc/gpushare/broker.toml, /etc/gpushare for the prefix
#     /usr (as GNUInstallDirs does). An existing one that differs is an admin's: kept.
function(gpushare_resolve out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "${CMAKE_INSTALL_PREFIX}/${dir}" PARENT_SCOPE)
  endif()
endfunction()

gpushare_resolve(GPUSHARE_BINDIR "${BINDIR}")
gpushare_resolve(unitdir "${UNITDIR}")
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  set(GPUSHARE_SYSCONFDIR "/etc")
else()
  set(GPUSHARE_SYSCONFDIR "${CMAKE_INSTALL_PREFIX}/etc")
endif()

# One folder per destination: installs to two prefixes at once (tests do) do not share a file.
string(MD5 destination "$ENV{DESTDIR}|${CMAKE_INSTALL_PREFIX}")
set(unit "${WORK_DIR}/${destination}/gpushare-broker.service")
configure_file("${SOURCE_DIR}/systemd/gpushare-broker.service.in" "${unit}" @ONLY)
file(INSTALL "${unit}" DESTINATION "${unitdir}"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(REMOVE_RECURSE "${WORK_DIR}/${destination}")

set(config "${SOURCE_DIR}/config/broker.toml")
set(installed "$ENV{DESTDIR}${GPUSHARE_SYSCONFDIR}/gpushare/broker.toml")
if(EXISTS "${installed}")
  file(SHA256 "${config}" ours)
  file(SHA256 "${installed}" theirs)
  if(NOT ours STREQUAL theirs)
    message(STATUS "Keeping: ${installed} (edited; the example is ${config})")
    return()
  endif()
endif()
file(INSTALL "${config}" DESTINATION "${GPUSHARE_SYSCONFDIR}/gpushare"
     PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
