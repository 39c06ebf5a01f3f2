# SimdrVersion.cmake - reads the library version from the SIMDR_VERSION_*
# macros of include/simdr.h, the single place where it is written, and
# refuses a header whose SIMDR_VERSION_STRING disagrees with its numbers.

# simdr_read_header_version(<header> <out-var>): sets <out-var> to "MAJOR.MINOR.PATCH".
function(simdr_read_header_version header out_var)
  file(STRINGS "${header}" _lines REGEX "^#define SIMDR_VERSION_(MAJOR|MINOR|PATCH|STRING) ")
  foreach(part MAJOR MINOR PATCH)
    set(_v_${part} "")
    foreach(line IN LISTS _lines)
      if(line MATCHES "^#define SIMDR_VERSION_${part} +([0-9]+)$")
        set(_v_${part} "${CMAKE_MATCH_1}")
      endif()
    endforeach()
    if(_v_${part} STREQUAL "")
      message(FATAL_ERROR "${header}: no '#define SIMDR_VERSION_${part} <number>' line")
    endif()
  endforeach()
  set(_version "${_v_MAJOR}.${_v_MINOR}.${_v_PATCH}")
  set(_string "")
  foreach(line IN LISTS _lines)
    if(line MATCHES "^#define SIMDR_VERSION_STRING +\"([^\"]*)\"$")
      set(_string "${CMAKE_MATCH_1}")
    endif()
  endforeach()
  if(NOT _string STREQUAL _version)
    message(FATAL_ERROR "${header}: SIMDR_VERSION_STRING \"${_string}\" does not match "
                        "SIMDR_VERSION_MAJOR/MINOR/PATCH (${_version})")
  endif()
  set(${out_var} "${_version}" PARENT_SCOPE)
endfunction()
