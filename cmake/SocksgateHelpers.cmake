# Shared build settings for our own targets.
function(socksgate_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(SOCKSGATE_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()

# socksgate_library(name SOURCES...) : one library per top-level folder.
function(socksgate_library name)
  add_library(${name} STATIC ${ARGN})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  socksgate_warnings(${name})
endfunction()
