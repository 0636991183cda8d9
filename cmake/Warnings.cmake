# Strict warnings, as errors, for every target of ours (not for dependencies).
set(MM_WARNINGS
  -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wpointer-arith -Wcast-qual -Wformat=2 -Wundef -Wvla -Wnull-dereference
  -Wdouble-promotion -Wimplicit-fallthrough -Wno-unused-parameter)
function(mm_target t)
  target_compile_options(${t} PRIVATE ${MM_WARNINGS})
  target_compile_definitions(${t} PRIVATE _POSIX_C_SOURCE=200809L)
  if(MM_NATIVE AND NOT MM_SANITIZE)
    target_compile_options(${t} PRIVATE -march=native)
  endif()
endfunction()
