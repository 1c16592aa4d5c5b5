/* The dlsym libgpushare.so exports, x86-64. Programs that dlopen the driver, NVML,
   NCCL/RCCL or the HIP runtime and dlsym from the handle get the hooks. A lookup of any
   other name jumps to glibc's dlsym with the caller's own return address on the
   stack, so lookups relative to the caller (RTLD_NEXT, which interposers such as
   sanitizer runtimes and profilers rely on) keep their meaning. Only the names a
   family claims take the C++ path (dlsym.cpp).

   void* dlsym(void* handle, const char* symbol) */
  .text
  .globl dlsym
  .type dlsym, @function
dlsym:
  /* Keep the arguments; 8 more bytes align the stack for the calls. */
  push %rdi
  push %rsi
  sub $8, %rsp
  mov gs_real_dlsym(%rip), %rax
  test %rax, %rax
  jnz 1f
  call gs_resolve_real_dlsym
1:
  mov 8(%rsp), %rdi
  call gs_dlsym_hook_for
  mov %rax, %rdx
  add $8, %rsp
  pop %rsi
  pop %rdi
  test %rdx, %rdx
  jnz 2f
  /* Not ours: glibc's dlsym, as if called from our caller. */
  jmp *gs_real_dlsym(%rip)
2:
  /* gs_dlsym_hooked(handle, symbol, hook) */
  jmp gs_dlsym_hooked
  .size dlsym, .-dlsym

  .section .note.GNU-stack,"",@progbits
