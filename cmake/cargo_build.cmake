# Build step of libcbslot (cmake -P), run by the cbslot_cargo target every build:
#  1. cargo builds the library; rustc prints the system libraries the static library needs
#     (--print=native-static-libs; cargo replays the note when nothing was rebuilt);
#  2. those libraries go into the pkg-config file (Libs.private), the CMake package's list and a linker
#     response file for the build tree's static target: one list, from the compiler that built the library;
#  3. the files to install are made from cargo's: the shared library without debug info (kept beside it in
#     a .debug file, found by gdb through .gnu_debuglink), the static library without debug info.
# Inputs (-D): CARGO, MANIFEST, PROFILE, LIB_DIR (cargo's output directory), OUT (directory for the files to
# install), OBJCOPY (may be empty: files are then installed as cargo made them), SHARED_NAME, REAL_NAME,
# STATIC_NAME, PC_IN.
cmake_minimum_required(VERSION 3.21)

execute_process(
  COMMAND "${CARGO}" rustc --locked --color never --profile "${PROFILE}" --lib --manifest-path "${MANIFEST}"
          -- --print=native-static-libs
  ERROR_VARIABLE cargo_err ECHO_ERROR_VARIABLE
  RESULT_VARIABLE cargo_rc)
if(NOT cargo_rc EQUAL 0)
  message(FATAL_ERROR "cargo failed (${cargo_rc})")
endif()

# The native libraries, in rustc's order. -lgcc_s (the unwinder as a shared library) is left to the
# compiler driver, which links the right unwinder itself: libgcc_s for a dynamic program, libgcc_eh for
# `cc -static` (where -lgcc_s cannot be found).
if(NOT cargo_err MATCHES "note: native-static-libs: ([^\r\n]*)")
  message(FATAL_ERROR "rustc did not print the native static libraries (no `native-static-libs` note)")
endif()
separate_arguments(native_libs UNIX_COMMAND "${CMAKE_MATCH_1}")
list(REMOVE_ITEM native_libs "-lgcc_s")
list(JOIN native_libs " " CBSLOT_NATIVE_STATIC_LIBS)

file(MAKE_DIRECTORY "${OUT}")
configure_file("${PC_IN}" "${OUT}/cbslot.pc" @ONLY)
file(CONFIGURE OUTPUT "${OUT}/cbslotNativeLibs.cmake" CONTENT
  "# The system libraries libcbslot.a needs, as rustc printed them when it built the library.\nset(CBSLOT_NATIVE_STATIC_LIBS \"${native_libs}\")\n")
file(CONFIGURE OUTPUT "${OUT}/native-static-libs.rsp" CONTENT "${CBSLOT_NATIVE_STATIC_LIBS}\n")

# Files to install, remade when cargo's file or the way it is processed changed: its path, size or time,
# or the objcopy steps, differ from the ones recorded beside the output (comparing times alone would keep a
# dev build after switching back to an older, unchanged release build).
function(cbslot_strip in out)
  file(SIZE "${in}" size)
  file(TIMESTAMP "${in}" time "%Y-%m-%dT%H:%M:%S" UTC)
  set(from "${in} ${size} ${time} ${OBJCOPY} ${ARGN}")
  if(EXISTS "${out}" AND EXISTS "${out}.from")
    file(READ "${out}.from" recorded)
    if(recorded STREQUAL from)
      return()
    endif()
  endif()
  file(REMOVE "${out}.from")
  if(NOT OBJCOPY)
    file(COPY_FILE "${in}" "${out}")
  else()
    foreach(step IN LISTS ARGN)
      string(REPLACE "|" ";" step "${step}")
      execute_process(COMMAND "${OBJCOPY}" ${step} RESULT_VARIABLE rc WORKING_DIRECTORY "${OUT}")
      if(NOT rc EQUAL 0)
        message(FATAL_ERROR "objcopy ${step} failed (${rc})")
      endif()
    endforeach()
  endif()
  file(WRITE "${out}.from" "${from}")
endfunction()
if(SHARED_NAME)
  # the debug link names the .debug file without a directory: gdb looks beside the library, in its .debug/
  # subdirectory and under /usr/lib/debug
  cbslot_strip("${LIB_DIR}/${SHARED_NAME}" "${OUT}/${REAL_NAME}"
    "--only-keep-debug|${LIB_DIR}/${SHARED_NAME}|${OUT}/${REAL_NAME}.debug"
    "--strip-unneeded|--remove-section=.comment|--add-gnu-debuglink=${REAL_NAME}.debug|${LIB_DIR}/${SHARED_NAME}|${OUT}/${REAL_NAME}")
endif()
cbslot_strip("${LIB_DIR}/${STATIC_NAME}" "${OUT}/${STATIC_NAME}"
  "--strip-debug|--remove-section=.comment|${LIB_DIR}/${STATIC_NAME}|${OUT}/${STATIC_NAME}")
