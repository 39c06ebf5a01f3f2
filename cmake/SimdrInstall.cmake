# SimdrInstall.cmake - what `cmake --install` puts beside the library (whose
# own rules are in src/CMakeLists.txt): the CMake package files for
# find_package(simdr), the simd-r-drive man page and its bash completion.
include(CMakePackageConfigHelpers)

set(SIMDR_CMAKE_INSTALL_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/simdr)
install(EXPORT simdrTargets NAMESPACE simdr:: DESTINATION ${SIMDR_CMAKE_INSTALL_DIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/simdrConfig.cmake.in
  ${PROJECT_BINARY_DIR}/simdrConfig.cmake
  INSTALL_DESTINATION ${SIMDR_CMAKE_INSTALL_DIR})
# Same major version = same SONAME (see "Versioning" in README.md).
write_basic_package_version_file(${PROJECT_BINARY_DIR}/simdrConfigVersion.cmake
  COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/simdrConfig.cmake ${PROJECT_BINARY_DIR}/simdrConfigVersion.cmake
  DESTINATION ${SIMDR_CMAKE_INSTALL_DIR})

install(FILES ${PROJECT_SOURCE_DIR}/LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR})

if(SIMDR_BUILD_CLI AND EXISTS ${PROJECT_SOURCE_DIR}/cli/CMakeLists.txt)
  configure_file(${PROJECT_SOURCE_DIR}/docs/man/simd-r-drive.1.in
    ${PROJECT_BINARY_DIR}/man/simd-r-drive.1 @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/man/simd-r-drive.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
  install(FILES ${PROJECT_SOURCE_DIR}/cli/completion/simd-r-drive.bash
    DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME simd-r-drive)
endif()
