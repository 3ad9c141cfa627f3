// The fused matrix products of matvec.cu with 8-bit activations ("q8"), for
// the weight types that carry most of the bytes of common models (Q4_1,
// Q8_0, Q4_K, Q6_K).
//
// Why: in the f32 path every weight byte is matched by several bytes of x
// read through L1 (an f32 per 4- or 6-bit weight, plus the norm weight), so
// those kernels are bound by L1 throughput at well under half of the HBM
// bandwidth (measured on an H200: 88% L1, 19% DRAM for the 8B FFN). Here
// each block first stages its input rows in shared memory: RMS-normed (the
// norm folded in as before) and quantized to int8 with one f32 scale per 32
// values (amax / 127, round to nearest even). The products then run as
// 4-way integer dot products (dp4a) over 32-value groups, each scaled in
// f32: a row's result is the dot product of the dequantized weights with the
// dequantized int8 activations (up to f32 rounding), which the tests
// reproduce on the host.
//
// Blocks of 32 warps loop over items (a grid of one block per SM), so each
// block stages its input once, not once per item. Measured on an H200
// (docs/CUDA.md): 32 warps, one block per SM is the fastest setting, 1.35x
// (1B) to 1.5x (8B) the f32 kernels' decode.
//
// Batch invariance: a row's staging reads only that row (reductions in a
// fixed order for the fixed block size), and its products use the same
// unit-to-lane mapping and reduction order whatever NR, the batch or the
// grid: `_1` and `_8` kernels give bit-identical rows.

#ifndef SMELT_MVQ_WARPS
#define SMELT_MVQ_WARPS 32
#endif
#define MVQ_WARPS SMELT_MVQ_WARPS
// Units each lane loads before using the first, in the decode kernels
// (H200, 8B Q4_K_M decode: 1 unit 309 tok/s, 2 units 297, 4 units 220:
// the 32 warps of a block already keep enough loads in flight, and fewer
// registers per thread serve them better).
#ifndef SMELT_Q8_UNITS
#define SMELT_Q8_UNITS 1
#endif

__device__ __forceinline__ int dp4(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

// Sum of the four signed bytes of each word of v.
__device__ __forceinline__ int bsum4(int4 v) {
    return dp4(v.x, 0x01010101, dp4(v.y, 0x01010101, dp4(v.z, 0x01010101, dp4(v.w, 0x01010101, 0))));
}

__device__ __forceinline__ int dot4(u32 w0, u32 w1, u32 w2, u32 w3, int4 x) {
    return dp4((int)w0, x.x, dp4((int)w1, x.y, dp4((int)w2, x.z, dp4((int)w3, x.w, 0))));
}

// Rows x[0..nv) of n_in values (a multiple of 32) into sq (int8, n_in per
// row) and sd (one scale per 32 values): x * (1 / rms(x)) * g with a norm
// weight g, else x. Every thread of the block calls this; the caller syncs
// before reading sq / sd.
__device__ __forceinline__ void stage_q8(const float* x, int n_in, int nv, const float* g,
                                         float eps, i8* sq, float* sd) {
    __shared__ float s_red[MVQ_WARPS];
    __shared__ float s_inv;
    const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
    const int nb = n_in / 32;
    for (int r = 0; r < nv; r++) {
        const float* xr = x + (u64)r * n_in;
        float inv = 1.0f;
        if (g) {
            float ss = 0.0f;
            for (int i = threadIdx.x; i < n_in; i += blockDim.x) ss += xr[i] * xr[i];
            ss = warp_sum(ss);
            if (lane == 0) s_red[warp] = ss;
            __syncthreads();
            if (threadIdx.x == 0) {
                float t = 0.0f;
                for (int w = 0; w < MVQ_WARPS; w++) t += s_red[w];
                s_inv = 1.0f / sqrtf(t / (float)n_in + eps);
            }
            __syncthreads();
            inv = s_inv;
        }
        for (int b = warp; b < nb; b += MVQ_WARPS) {
            float v = xr[32 * b + lane];
            if (g) v = v * inv * g[32 * b + lane];
            const float amax = warp_max(fabsf(v));
            const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
            sq[(u64)r * n_in + 32 * b + lane] = (i8)__float2int_rn(v * id);
            if (lane == 0) sd[(u64)r * nb + b] = amax / 127.0f;
        }
    }
}

// a += A . x (b += B . x when two) for unit idx of a row, x staged as int8
// (xq, n_in values) with scales xd. The unit layouts are units.cu's.
template <int T> struct QDot;

template <> struct QDot<W_Q4_1> {
    static __device__ __forceinline__ void dot(const Unit<W_Q4_1>::Raw& A, const Unit<W_Q4_1>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               float& a, float& b) {
        const int4 xl = *(const int4*)(xq + (u64)idx * 32);
        const int4 xh = *(const int4*)(xq + (u64)idx * 32 + 16);
        const float dx = xd[idx];
        const float sx = (float)(bsum4(xl) + bsum4(xh));
        {
            const int s = dot4(A.q[0] & 0x0F0F0F0F, A.q[1] & 0x0F0F0F0F, A.q[2] & 0x0F0F0F0F, A.q[3] & 0x0F0F0F0F, xl) +
                          dot4((A.q[0] >> 4) & 0x0F0F0F0F, (A.q[1] >> 4) & 0x0F0F0F0F, (A.q[2] >> 4) & 0x0F0F0F0F, (A.q[3] >> 4) & 0x0F0F0F0F, xh);
            a += dx * (half_to_float((u16)(A.dm & 0xFFFF)) * (float)s + half_to_float((u16)(A.dm >> 16)) * sx);
        }
        if (two) {
            const int s = dot4(B.q[0] & 0x0F0F0F0F, B.q[1] & 0x0F0F0F0F, B.q[2] & 0x0F0F0F0F, B.q[3] & 0x0F0F0F0F, xl) +
                          dot4((B.q[0] >> 4) & 0x0F0F0F0F, (B.q[1] >> 4) & 0x0F0F0F0F, (B.q[2] >> 4) & 0x0F0F0F0F, (B.q[3] >> 4) & 0x0F0F0F0F, xh);
            b += dx * (half_to_float((u16)(B.dm & 0xFFFF)) * (float)s + half_to_float((u16)(B.dm >> 16)) * sx);
        }
    }
};

template <> struct QDot<W_Q8_0> {
    static __device__ __forceinline__ int one(const Unit<W_Q8_0>::Raw& R, int4 x0, int4 x1) {
        return dot4(R.q[0], R.q[1], R.q[2], R.q[3], x0) + dot4(R.q[4], R.q[5], R.q[6], R.q[7], x1);
    }
    static __device__ __forceinline__ void dot(const Unit<W_Q8_0>::Raw& A, const Unit<W_Q8_0>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               float& a, float& b) {
        const int4 x0 = *(const int4*)(xq + (u64)idx * 32);
        const int4 x1 = *(const int4*)(xq + (u64)idx * 32 + 16);
        const float dx = xd[idx];
        a += half_to_float((u16)A.d) * dx * (float)one(A, x0, x1);
        if (two) b += half_to_float((u16)B.d) * dx * (float)one(B, x0, x1);
    }
};

template <> struct QDot<W_Q4_K> {
    // One row's two groups: (d sc) dx sum(q xq) - (dmin m) dx sum(xq) each.
    static __device__ __forceinline__ float one(const Unit<W_Q4_K>::Raw& R, int gi, int4 xl, int4 xh,
                                                float dxl, float dxh, int sxl, int sxh) {
        const int il = dot4(R.q.x & 0x0F0F0F0F, R.q.y & 0x0F0F0F0F, R.q.z & 0x0F0F0F0F, R.q.w & 0x0F0F0F0F, xl);
        const int ih = dot4((R.q.x >> 4) & 0x0F0F0F0F, (R.q.y >> 4) & 0x0F0F0F0F, (R.q.z >> 4) & 0x0F0F0F0F,
                            (R.q.w >> 4) & 0x0F0F0F0F, xh);
        float dl, ml, dh, mh;
        Unit<W_Q4_K>::scales(R.h, gi, dl, ml);
        Unit<W_Q4_K>::scales(R.h, gi + 1, dh, mh);
        return dxl * (dl * (float)il - ml * (float)sxl) + dxh * (dh * (float)ih - mh * (float)sxh);
    }
    static __device__ __forceinline__ void dot(const Unit<W_Q4_K>::Raw& A, const Unit<W_Q4_K>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               float& a, float& b) {
        // idx = threadIdx.x (mod 32), as in Unit<W_Q4_K>::dot.
        const int k = threadIdx.x & 7, c = k >> 1, hf = k & 1;
        const u64 blk = (u64)(idx >> 3);
        const u64 e0 = blk * 256 + 64 * c + 16 * hf;
        const int4 xl = *(const int4*)(xq + e0);
        const int4 xh = *(const int4*)(xq + e0 + 32);
        const float dxl = xd[blk * 8 + 2 * c], dxh = xd[blk * 8 + 2 * c + 1];
        const int sxl = bsum4(xl), sxh = bsum4(xh);
        a += one(A, 2 * c, xl, xh, dxl, dxh, sxl, sxh);
        if (two) b += one(B, 2 * c, xl, xh, dxl, dxh, sxl, sxh);
    }
};

template <> struct QDot<W_Q6_K> {
    // Group j of a row: d sc_j dx_j sum((q - 32) xq), the -32 taken as 32 sum(xq).
    static __device__ __forceinline__ float one(const Unit<W_Q6_K>::Raw& R, int j, int4 xw, int sx) {
        const u32* la = (j & 1) ? R.l1 : R.l0;
        u32 w[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = ((j < 2 ? la[i] : la[i] >> 4) & 0x0F0F0F0F) | (((R.h[i] >> (2 * j)) & 0x03030303) << 4);
        const int s = dot4(w[0], w[1], w[2], w[3], xw) - 32 * sx;
        const float sc = u2f(((R.sc >> (8 * j)) & 0xFF) ^ 0x80) - 128.0f;
        return half_to_float((u16)R.d) * sc * (float)s;
    }
    static __device__ __forceinline__ void dot(const Unit<W_Q6_K>::Raw& A, const Unit<W_Q6_K>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               float& a, float& b) {
        // idx = threadIdx.x (mod 32), as in Unit<W_Q6_K>::dot.
        const int k = threadIdx.x & 3, hh = k >> 1, l0 = 16 * (k & 1);
        const u64 blk = (u64)(idx >> 2);
        const u64 e0 = blk * 256 + 128 * hh + l0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int4 xw = *(const int4*)(xq + e0 + 32 * j);
            const float dx = xd[blk * 8 + 4 * hh + j];
            const int sx = bsum4(xw);
            a += dx * one(A, j, xw, sx);
            if (two) b += dx * one(B, j, xw, sx);
        }
    }
};

// Units of the first chunk (U per thread) of rows ra / rb.
template <int T, int U>
__device__ __forceinline__ void q8_load(const u8* ra, const u8* rb, int base, int tid, int nt, int nu,
                                        typename Unit<T>::Raw wa[U], typename Unit<T>::Raw wb[U]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        const int idx = base + nt * u + tid;
        if (idx < nu) {
            Unit<T>::load(ra, idx, wa[u]);
            if (rb) Unit<T>::load(rb, idx, wb[u]);
        }
    }
}

// The item's sums of rows ra and rb (rb may be null) against the nv staged
// rows, in the item's first warp (after the kw warps' sums are added in
// order). `loaded`: the first chunk is already in wa / wb. Every thread of
// the block calls this (it may hold a barrier).
template <int T, int NR, int U>
__device__ __forceinline__ void q8_item(bool active, int part, int tid, int nt, int kw,
                                        const u8* ra, const u8* rb, const i8* sq, const float* sd,
                                        int n_in, int nv, bool loaded,
                                        typename Unit<T>::Raw wa[U], typename Unit<T>::Raw wb[U],
                                        float a[NR], float b[NR]) {
    __shared__ float s_part[MVQ_WARPS][2][NR];
#pragma unroll
    for (int r = 0; r < NR; r++) a[r] = b[r] = 0.0f;
    const int nu = n_in / Unit<T>::VALUES, nb = n_in / 32;
    if (active) {
        for (int base = 0; base < nu; base += nt * U) {
            if (base > 0 || !loaded) q8_load<T, U>(ra, rb, base, tid, nt, nu, wa, wb);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int idx = base + nt * u + tid;
                if (idx < nu) {
#pragma unroll
                    for (int r = 0; r < NR; r++) {
                        if (r < nv) QDot<T>::dot(wa[u], wb[u], rb != nullptr, idx, sq + (u64)r * n_in, sd + (u64)r * nb, a[r], b[r]);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++) {
        a[r] = warp_sum(a[r]);
        b[r] = warp_sum(b[r]);
    }
    if (kw > 1) {
        const int warp = threadIdx.x / 32;
        __syncthreads();
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
            for (int r = 0; r < NR; r++) {
                s_part[warp][0][r] = a[r];
                s_part[warp][1][r] = b[r];
            }
        }
        __syncthreads();
        if (part == 0) {
#pragma unroll
            for (int r = 0; r < NR; r++) {
                for (int p = 1; p < kw; p++) {
                    a[r] += s_part[warp + p][0][r];
                    b[r] += s_part[warp + p][1][r];
                }
            }
        }
    }
}

// The loop every q8 kernel runs: prefetch the first item's weights, wait
// for the previous kernel, stage x, then each item of this block in turn:
// rows(item, &ra, &rb) names its weight rows (false: no such item), and
// store(item, a, b) writes its results (lanes 0..nv of the first warp).
template <int T, int NR, class Rows, class Store>
__device__ __forceinline__ void q8_run(const float* x, int n_in, int n, const float* g, float eps,
                                       int kw, int n_items, Rows rows, Store store) {
    extern __shared__ __align__(16) u8 q8_smem[];
    constexpr int U = (NR == 1 && T != W_Q6_K) ? SMELT_Q8_UNITS : 1;
    const int r0 = blockIdx.y * NR;
    const int nv = min(NR, n - r0);
    i8* sq = (i8*)q8_smem;
    float* sd = (float*)(q8_smem + (u64)NR * n_in);
    const int warp = threadIdx.x / 32, part = warp % kw;
    const int per_block = MVQ_WARPS / kw;
    const int tid = part * 32 + (threadIdx.x & 31), nt = kw * 32;
    const int nu = n_in / Unit<T>::VALUES;
    typename Unit<T>::Raw wa[U], wb[U];
    int item = blockIdx.x * per_block + warp / kw;
    const u8 *ra = nullptr, *rb = nullptr;
    bool active = rows(item, ra, rb);
    if (active) q8_load<T, U>(ra, rb, 0, tid, nt, nu, wa, wb);
    pdl_wait_then_trigger();
    stage_q8(x + (u64)r0 * n_in, n_in, nv, g, eps, sq, sd);
    __syncthreads();
    bool loaded = true;
    for (int first = blockIdx.x * per_block; first < n_items; first += gridDim.x * per_block) {
        if (!loaded) {
            item = first + warp / kw;
            active = rows(item, ra, rb);
        }
        float a[NR], b[NR];
        q8_item<T, NR, U>(active, part, tid, nt, kw, ra, rb, sq, sd, n_in, nv, loaded, wa, wb, a, b);
        loaded = false;
        if (active && part == 0) store(item, r0, nv, a, b);
    }
}

template <int T, int NR>
__device__ __forceinline__ void mvq_plain_body(MvJob j, const float* x, int n_in, int n,
                                               const float* g, float eps, int accumulate, int kw) {
    const int n_items = (j.n_rows + 1) / 2;
    q8_run<T, NR>(
        x, n_in, n, g, eps, kw, n_items,
        [&](int item, const u8*& ra, const u8*& rb) { return plain_rows(j, item, ra, rb); },
        [&](int item, int r0, int nv, float a[NR], float b[NR]) {
            float inv[NR];
#pragma unroll
            for (int r = 0; r < NR; r++) inv[r] = 1.0f;
            plain_store<NR>(j, 2 * item, r0, nv, a, b, inv, accumulate);
        });
}

template <int T, int NR>
__device__ __forceinline__ void mvq_qkv_body(MvJob jq, MvJob jk, MvJob jv, const float* x,
                                             int n_in, int n, const float* g, float eps,
                                             const u32* positions, const float* inv_freq,
                                             int head_dim, int n_rot, int neox, void* kc,
                                             void* vc, u64 layer_off, const u32* slots,
                                             int kv_f16, int kw, int item0, int item1) {
    // Items item0..item1 of the layer's (Q, K, V) items: a launch may take
    // only the rows of one weight type.
    q8_run<T, NR>(
        x, n_in, n, g, eps, kw, item1 - item0,
        [&](int item, const u8*& ra, const u8*& rb) {
            return qkv_rows(qkv_item(jq, jk, jv, item0 + item, head_dim, n_rot, neox), ra, rb);
        },
        [&](int item, int r0, int nv, float a[NR], float b[NR]) {
            float inv[NR];
#pragma unroll
            for (int r = 0; r < NR; r++) inv[r] = 1.0f;
            const QkvItem q = qkv_item(jq, jk, jv, item0 + item, head_dim, n_rot, neox);
            qkv_store<NR>(q, jq, jk, r0, nv, a, b, inv, positions, inv_freq, kc, vc, layer_off,
                          slots, kv_f16);
        });
}

template <int T, int NR>
__device__ __forceinline__ void mvq_swiglu_body(MvJob jg, MvJob ju, const float* x, int n_in,
                                                int n, const float* g, float eps, int kw) {
    q8_run<T, NR>(
        x, n_in, n, g, eps, kw, jg.n_rows,
        [&](int item, const u8*& ra, const u8*& rb) { return swiglu_rows(jg, ju, item, ra, rb); },
        [&](int item, int r0, int nv, float a[NR], float b[NR]) {
            float inv[NR];
#pragma unroll
            for (int r = 0; r < NR; r++) inv[r] = 1.0f;
            swiglu_store<NR>(jg, item, r0, nv, a, b, inv);
        });
}

#define SMELT_MVQ_KERNELS(NR, SUFFIX, TT)                                                        \
    extern "C" __global__ void __launch_bounds__(MVQ_WARPS * 32)                                 \
        mvq_plain_##NR##SUFFIX(MvJob j, const float* x, int n_in, int n, const float* g,         \
                               float eps, int accumulate, int kw) {                              \
        mvq_plain_body<TT, NR>(j, x, n_in, n, g, eps, accumulate, kw);                           \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MVQ_WARPS * 32)                                 \
        mvq_qkv_##NR##SUFFIX(MvJob jq, MvJob jk, MvJob jv, const float* x, int n_in, int n,      \
                             const float* g, float eps, const u32* positions,                    \
                             const float* inv_freq, int head_dim, int n_rot, int neox, void* kc, \
                             void* vc, u64 layer_off, const u32* slots, int kv_f16, int kw,      \
                             int item0, int item1) {                                             \
        mvq_qkv_body<TT, NR>(jq, jk, jv, x, n_in, n, g, eps, positions, inv_freq, head_dim,      \
                             n_rot, neox, kc, vc, layer_off, slots, kv_f16, kw, item0, item1);   \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MVQ_WARPS * 32)                                 \
        mvq_swiglu_##NR##SUFFIX(MvJob jg, MvJob ju, const float* x, int n_in, int n,             \
                                const float* g, float eps, int kw) {                             \
        mvq_swiglu_body<TT, NR>(jg, ju, x, n_in, n, g, eps, kw);                                 \
    }

SMELT_MVQ_KERNELS(1, _q4_1, W_Q4_1)
SMELT_MVQ_KERNELS(8, _q4_1, W_Q4_1)
SMELT_MVQ_KERNELS(1, _q4_k, W_Q4_K)
SMELT_MVQ_KERNELS(8, _q4_k, W_Q4_K)
SMELT_MVQ_KERNELS(1, _q6_k, W_Q6_K)
SMELT_MVQ_KERNELS(8, _q6_k, W_Q6_K)
SMELT_MVQ_KERNELS(1, _q8_0, W_Q8_0)
SMELT_MVQ_KERNELS(8, _q8_0, W_Q8_0)
