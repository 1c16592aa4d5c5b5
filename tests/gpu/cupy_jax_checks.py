"""CuPy and JAX checks of the real-GPU suite, printing KEY=VALUE lines.

  cupy_jax_checks.py cupy_memcap BYTES   CuPy sees the cap and raises OutOfMemoryError past it
  cupy_jax_checks.py cupy_kernel         an elementwise CuPy kernel; prints a digest of the result
  cupy_jax_checks.py jax_memcap BYTES    JAX (no preallocation) fails cleanly past the cap
"""
import hashlib
import sys


def cupy_memcap(cap):
    import cupy
    free, total = cupy.cuda.runtime.memGetInfo()
    print(f"total={total}")
    print(f"free={free}")
    try:
        cupy.empty(cap + (1 << 20), dtype=cupy.uint8)
        print("oom=none")
    except cupy.cuda.memory.OutOfMemoryError:
        print("oom=OutOfMemoryError")
    cupy.get_default_memory_pool().free_all_blocks()
    x = cupy.ones(cap // 4, dtype=cupy.uint8)
    print(f"after_oom_sum={int(x.sum())}")


def cupy_kernel():
    import cupy
    k = cupy.ElementwiseKernel("float32 x, float32 y", "float32 z", "z = x * 2.5f + y", "axpy")
    x = cupy.arange(1 << 20, dtype=cupy.float32)
    y = cupy.full(1 << 20, 3.0, dtype=cupy.float32)
    print("cupy_sha256=" + hashlib.sha256(cupy.asnumpy(k(x, y)).tobytes()).hexdigest())


def jax_memcap(cap):
    import jax
    import jax.numpy as jnp
    dev = jax.devices("gpu")[0]
    stats = dev.memory_stats() or {}
    print(f"bytes_limit={stats.get('bytes_limit', -1)}")
    try:
        x = jnp.ones((cap + (256 << 20),), dtype=jnp.uint8)
        x.block_until_ready()
        print("oom=none")
    except Exception as e:  # XlaRuntimeError: RESOURCE_EXHAUSTED
        print("oom=" + ("RESOURCE_EXHAUSTED" if "RESOURCE_EXHAUSTED" in str(e) else type(e).__name__))
    y = jnp.ones((cap // 8,), dtype=jnp.uint8)
    print(f"after_oom_sum={int(y.sum())}")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "cupy_memcap":
        cupy_memcap(int(sys.argv[2]))
    elif cmd == "cupy_kernel":
        cupy_kernel()
    elif cmd == "jax_memcap":
        jax_memcap(int(sys.argv[2]))
    else:
        sys.exit(f"unknown check {cmd}")
