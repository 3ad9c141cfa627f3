// Shared helpers for every Smelt kernel. NVRTC compiles this file first, then
// the kernel files, as one program; nothing here includes a system header.
//
// Weight bytes are read as they are stored in the GGUF file: blocks start at
// 2-byte-aligned offsets, so multi-byte fields are assembled from 16-bit loads.

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef signed char i8;
typedef unsigned long long u64;

// A block's place in its grid. Kernels pass `blk_here()` to their bodies;
// the step program (program.cu) runs the bodies of several launches in one
// persistent kernel and passes each launch's virtual blocks instead.
struct Blk {
    u32 x, y, z, gx;
};

__device__ __forceinline__ Blk blk_here() {
    return Blk{blockIdx.x, blockIdx.y, blockIdx.z, gridDim.x};
}

// -infinity (no math header under NVRTC).
#define NEG_INF __int_as_float(0xff800000)

// IEEE half bits to float (exact).
__device__ __forceinline__ float half_to_float(u16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}

// Float to IEEE half bits, rounding to nearest even.
__device__ __forceinline__ u16 float_to_half(float f) {
    u16 h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}

// bfloat16 bits to float (exact).
__device__ __forceinline__ float bf16_to_float(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Little-endian u16 at a 2-byte-aligned address.
__device__ __forceinline__ u16 ld_u16(const u8* p) {
    return *(const u16*)p;
}

// Little-endian u32 at a 2-byte-aligned address.
__device__ __forceinline__ u32 ld_u32_a2(const u8* p) {
    return (u32)ld_u16(p) | ((u32)ld_u16(p + 2) << 16);
}

// IEEE half stored at a 2-byte-aligned address, as float.
__device__ __forceinline__ float ld_half(const u8* p) {
    return half_to_float(ld_u16(p));
}

// Sum over the 32 lanes of a warp; every lane gets the total. The order of
// additions is fixed, so a row's result never depends on its neighbours.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// (float)q for 0 <= q < 2^23, exactly, without the int-to-float converter
// (a quarter-rate unit on Hopper): q's bits under the exponent of 2^23, then
// 2^23 taken away.
__device__ __forceinline__ float u2f(u32 q) {
    return __int_as_float(0x4B000000u | q) - 8388608.0f;
}

// Programmatic dependent launch (sm_90). pdl_wait() returns once the
// previous kernel on the stream has finished and its writes are visible;
// pdl_trigger() lets the next kernel start (its blocks then run up to their
// own wait). Every kernel calls pdl_wait_then_trigger() before it reads
// anything an earlier kernel wrote, writes anything, or exits: so a kernel
// finishes after its predecessor (the order holds transitively), and at most
// one kernel waits while another runs. Weight reads (never written by a
// kernel) may go before the wait: that is what hides their latency. Launched
// without the attribute, both are no-ops.
__device__ __forceinline__ void pdl_trigger() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_wait_then_trigger() {
    pdl_wait();
    pdl_trigger();
}

// The wait of a kernel body that a separate launch runs (the step program
// passes its grid barrier instead: program.cu).
struct PdlWait {
    __device__ __forceinline__ void operator()() const { pdl_wait_then_trigger(); }
};

// How the unit loads read weights (units.cu): 1 (default) the read-only
// path without L1 allocation (`ld.global.nc.L1::no_allocate`): a weight
// byte is read once per step, so an L1 line for it buys nothing (H100,
// same run: SmolLM2-shape decode +5 %, 1B +1.5 %, 8B +1.7 % against plain
// loads); 0 plain loads, kept for A/B runs. An L2 evict-first policy and
// the read-only path with L1 allocation were no better (CUDA.md "Session 8").
#ifndef SMELT_W_LD
#define SMELT_W_LD 1
#endif

// A weight word (4-byte aligned) and 16 weight bytes (16-byte aligned), as
// SMELT_W_LD says. Weights are never written while kernels run.
__device__ __forceinline__ u32 wld32(const void* p) {
#if SMELT_W_LD == 0
    return *(const u32*)p;
#else
    u32 v;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
#endif
}

__device__ __forceinline__ uint4 wld128(const void* p) {
#if SMELT_W_LD == 0
    return *(const uint4*)p;
#else
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
#endif
}
