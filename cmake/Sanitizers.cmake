# MM_SANITIZE=address: ASan + UBSan (all UB is fatal). MM_SANITIZE=thread: TSan.
if(MM_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(MM_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(MM_SANITIZE)
  message(FATAL_ERROR "MM_SANITIZE must be empty, 'address' or 'thread', not '${MM_SANITIZE}'")
endif()

# MM_FUZZ: instrument every library for libFuzzer's coverage (the fuzz
# binaries themselves add -fsanitize=fuzzer to get libFuzzer's main).
if(MM_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "MM_FUZZ needs clang: -DCMAKE_C_COMPILER=clang")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()
