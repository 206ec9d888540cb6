include(GNUInstallDirs)
include(CMakePackageConfigHelpers)
configure_package_config_file(cmake/longattnConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/longattnConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/longattn)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/longattnConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/longattnConfig.cmake
              ${CMAKE_CURRENT_BINARY_DIR}/longattnConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/longattn)
install(EXPORT longattnTargets NAMESPACE longattn:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/longattn)
