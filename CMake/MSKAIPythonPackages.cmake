#
# mskaiInstallPythonPackages(
#   TARGET_NAME <name>
#   PACKAGES <package folder>...            (relative to the project source folder)
#   [RESOURCE_DIRECTORIES <folder>...]      (relative to the project source folder)
#   )
#
# Copies every .py file of each package, and the package data files that
# pyproject.toml ships (*.json, *.png), into the build tree's scripted-modules
# folder and installs them beside the modules' scripts, keeping the folder
# layout (mskai/io/dicom.py stays mskai/io/dicom.py). Every file found under a
# resource directory is copied and installed the same way.
#
# The file lists are globbed at configure time with CONFIGURE_DEPENDS, so a
# new module file is picked up by the next build without editing this list.
#
function(mskaiInstallPythonPackages)
  set(options)
  set(oneValueArgs TARGET_NAME)
  set(multiValueArgs PACKAGES RESOURCE_DIRECTORIES)
  cmake_parse_arguments(MY "${options}" "${oneValueArgs}" "${multiValueArgs}" ${ARGN})

  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to mskaiInstallPythonPackages(): \"${MY_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT MY_TARGET_NAME OR NOT MY_PACKAGES)
    message(FATAL_ERROR "mskaiInstallPythonPackages() needs TARGET_NAME and PACKAGES")
  endif()

  set(_scripts)
  set(_resources)
  foreach(_package IN LISTS MY_PACKAGES)
    if(NOT EXISTS ${PROJECT_SOURCE_DIR}/${_package}/__init__.py)
      message(FATAL_ERROR "mskaiInstallPythonPackages(): '${_package}' is not a Python package folder")
    endif()
    file(GLOB_RECURSE _package_scripts RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
      ${PROJECT_SOURCE_DIR}/${_package}/*.py)
    file(GLOB_RECURSE _package_data RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
      ${PROJECT_SOURCE_DIR}/${_package}/*.json
      ${PROJECT_SOURCE_DIR}/${_package}/*.png)
    list(APPEND _scripts ${_package_scripts})
    list(APPEND _resources ${_package_data})
  endforeach()

  foreach(_directory IN LISTS MY_RESOURCE_DIRECTORIES)
    file(GLOB_RECURSE _directory_files RELATIVE ${PROJECT_SOURCE_DIR} CONFIGURE_DEPENDS
      ${PROJECT_SOURCE_DIR}/${_directory}/*)
    list(APPEND _resources ${_directory_files})
  endforeach()

  # Byte-compiled leftovers of a developer's source tree are not part of the package.
  list(FILTER _scripts EXCLUDE REGEX "(^|/)__pycache__/")
  list(FILTER _resources EXCLUDE REGEX "(^|/)__pycache__/|\\.pyc$")

  message(STATUS "Configuring Python packages: ${MY_PACKAGES} (${MY_TARGET_NAME})")

  # Same destination and install layout as slicerMacroBuildScriptedModule, so
  # "import mskai" works from every module in the build tree and once installed.
  ctkMacroCompilePythonScript(
    TARGET_NAME ${MY_TARGET_NAME}
    SCRIPTS "${_scripts}"
    RESOURCES "${_resources}"
    SOURCE_DIR ${PROJECT_SOURCE_DIR}
    DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}
    INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}
    NO_INSTALL_SUBDIR
    )
endfunction()
