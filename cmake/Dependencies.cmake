# Every dependency is a Debian package (tools/setup.sh installs them).
find_package(PkgConfig REQUIRED)
pkg_check_modules(UV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(SODIUM REQUIRED IMPORTED_TARGET libsodium)
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
find_package(ZLIB REQUIRED)
find_package(Threads REQUIRED)

# msgpack-c (libmsgpack-dev ships libmsgpackc and msgpack.h)
find_path(MSGPACK_INCLUDE_DIR msgpack.h REQUIRED)
find_library(MSGPACK_LIBRARY NAMES msgpack-c msgpackc REQUIRED)
add_library(mm_msgpack INTERFACE)
target_include_directories(mm_msgpack SYSTEM INTERFACE ${MSGPACK_INCLUDE_DIR})
target_link_libraries(mm_msgpack INTERFACE ${MSGPACK_LIBRARY})

# OpenBLAS, the pthread flavour Debian installs by default.
find_path(OPENBLAS_INCLUDE_DIR cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas NO_DEFAULT_PATH)
find_library(OPENBLAS_LIBRARY NAMES openblas REQUIRED)
add_library(mm_blas INTERFACE)
target_include_directories(mm_blas SYSTEM INTERFACE ${OPENBLAS_INCLUDE_DIR})
target_link_libraries(mm_blas INTERFACE ${OPENBLAS_LIBRARY})

# CUDA is optional: gpu/ is built only when a CUDA compiler is found.
include(CheckLanguage)
if(NOT DEFINED CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
endif()
check_language(CUDA)
set(MM_HAVE_CUDA OFF)
if(CMAKE_CUDA_COMPILER AND NOT MM_SANITIZE AND EXISTS ${CMAKE_SOURCE_DIR}/gpu/CMakeLists.txt)
  enable_language(CUDA)
  set(MM_HAVE_CUDA ON)
endif()
message(STATUS "murmur: CUDA backend ${MM_HAVE_CUDA}")
