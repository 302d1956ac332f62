# Shared build settings for our own targets.
function(socksgate_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  # GCC 12 misreads Asio's coroutine-frame allocator (aligned_alloc + matching sized delete)
  # as a mismatched new/delete; the warning is a known false positive in Asio's headers.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    target_compile_options(${target} PRIVATE -Wno-mismatched-new-delete)
  endif()
  if(SOCKSGATE_SANITIZE MATCHES "thread" AND CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    # Asio's reactor uses std::atomic_thread_fence, which TSan does not model; GCC warns about
    # every inlined use. TSan still instruments all the accesses around it.
    target_compile_options(${target} PRIVATE -Wno-tsan)
  endif()
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
