// The samples' compute-bound kernel (compute_loop, nccl_allreduce --compute): a
// dependent-FMA loop in PTX, named simgpu_compute_500us so that simgpu models each
// launch as 500 us of compute; on a real GPU its `iters` argument sets its length.
#pragma once

namespace samples {

inline constexpr char kComputeKernel[] = "simgpu_compute_500us";

// Each thread runs `iters` iterations of 4 dependent FMAs (x = x * 0.9999 + 0.0001, which
// stays in [0, 1]) and stores x to out[index] so the loop is not optimized away.
inline constexpr char kComputePtx[] = R"PTX(
.version 7.8
.target sm_70
.address_size 64

.visible .entry simgpu_compute_500us(
    .param .u64 simgpu_compute_500us_param_out,
    .param .u32 simgpu_compute_500us_param_iters
)
{
    .reg .pred %p<3>;
    .reg .b32 %r<7>;
    .reg .f32 %f<2>;
    .reg .b64 %rd<5>;

    ld.param.u64 %rd1, [simgpu_compute_500us_param_out];
    ld.param.u32 %r1, [simgpu_compute_500us_param_iters];
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.u32 %r5, %r2, %r3, %r4;
    cvt.rn.f32.u32 %f1, %r5;
    mul.rn.f32 %f1, %f1, 0f33800000;
    mov.u32 %r6, 0;
    setp.eq.u32 %p1, %r1, 0;
    @%p1 bra STORE;
LOOP:
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    fma.rn.f32 %f1, %f1, 0f3F7FF972, 0f38D1B717;
    add.u32 %r6, %r6, 1;
    setp.lt.u32 %p2, %r6, %r1;
    @%p2 bra LOOP;
STORE:
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r5, 4;
    add.s64 %rd4, %rd2, %rd3;
    st.global.f32 [%rd4], %f1;
    ret;
}
)PTX";

}  // namespace samples
