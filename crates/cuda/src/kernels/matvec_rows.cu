// The multi-row fused products (the server's decode steps: one row per
// running sequence) for Q4_1 and Q8_0 weights, with x resident in shared
// memory: `mvr_<kind>_8_<type>`, used instead of `mv_<kind>_8_<type>` when
// the block's input rows fit (src/fused.rs).
//
// Why: the `_8` kernels of matvec.cu give each warp one item and stage x
// per warp, per 32-unit tile and per batch row, from global memory with a
// warp barrier around each copy; a 64-row SmolLM2 step spent most of its
// time stalled on those copies (ncu: no eligible warp 64 % of cycles, 168
// registers, 12 warps an SM). Here a block of MVR_WARPS warps copies its
// NR input rows into shared memory once, with coalesced loads, and then
// loops over items, so the copy is paid once per block, not once per item
// and tile. What the one-row kernels redo per item with the norm folded in
// (x times the norm weight, and each row's sum of squares for 1 / rms) is
// the same for every item, so it is done once, at staging. Each unit is
// decoded eight values at a time for every row (fewer registers), and the
// next item's weights load while the current one is summed.
//
// Batch invariance: every value, product and sum is the one-row kernels'
// (Unit<T>::dot, Decoded<T>), in the same order: a lane's units are tid,
// tid + nt, ... of the item's kw warps, its run's values in order, four at
// a time, summed per unit and then added to the lane's total; then
// warp_sum and the item's warps in order. So a row's result equals the
// `_1` kernel's bit for bit, whatever NR, the batch or the grid (tested by
// fused_rows_do_not_depend_on_the_batch).

#ifndef SMELT_MVR_WARPS
#define SMELT_MVR_WARPS 8
#endif
#define MVR_WARPS SMELT_MVR_WARPS
// Blocks an SM must be able to hold (the register cap of __launch_bounds__):
// two, so that one block's staging overlaps the other's products.
#ifndef SMELT_MVR_MIN_BLOCKS
#define SMELT_MVR_MIN_BLOCKS 2
#endif

// Eight values 8c .. 8c + 7 of a unit, decoded as Decoded<T>::deq does.
template <int T> struct Deq8;

template <> struct Deq8<W_Q4_1> {
    static __device__ __forceinline__ void deq(const Unit<W_Q4_1>::Raw& A, int c, float w[8]) {
        const float d = half_to_float((u16)(A.dm & 0xFFFF)), m = half_to_float((u16)(A.dm >> 16));
        const int half = c >> 1;
#pragma unroll
        for (int ii = 0; ii < 2; ii++) {
            const int i = 2 * (c & 1) + ii;
            const u32 q = half ? (A.q[i] >> 4) & 0x0F0F0F0F : A.q[i] & 0x0F0F0F0F;
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * ii + k] = d * (byte_f(q, k) - 8388608.0f) + m;
        }
    }
};

template <> struct Deq8<W_Q8_0> {
    static __device__ __forceinline__ void deq(const Unit<W_Q8_0>::Raw& A, int c, float w[8]) {
        const float d = half_to_float((u16)A.d);
#pragma unroll
        for (int ii = 0; ii < 2; ii++) {
            const u32 q = A.q[2 * c + ii] ^ 0x80808080u;
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * ii + k] = d * (byte_f(q, k) - 8388736.0f);
        }
    }
};

// a[r] += A . x[r] and b[r] += B . x[r] over unit idx for the nv staged
// rows (row r at sx + r * stride, padded as STAGE_PAD, already scaled by
// the norm weight): decoded_dot's values, products and order.
template <int T, int NR>
__device__ __forceinline__ void mvr_unit(const typename Unit<T>::Raw& A,
                                         const typename Unit<T>::Raw& B, bool two, int idx,
                                         const float* sx, int stride, int nv, float a[NR],
                                         float b[NR]) {
    float sa[NR], sb[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) sa[r] = sb[r] = 0.0f;
    const int run = STAGE_PAD(idx * 32);
#pragma unroll
    for (int c = 0; c < 4; c++) {
        float wa[8], wb[8];
        Deq8<T>::deq(A, c, wa);
        if (two) Deq8<T>::deq(B, c, wb);
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (r < nv) {
                const float* xs = sx + r * stride + run + 8 * c;
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const float4 v = *(const float4*)(xs + 4 * h);
                    const float* w = wa + 4 * h;
                    sa[r] += w[0] * v.x + w[1] * v.y + w[2] * v.z + w[3] * v.w;
                    if (two) {
                        const float* u = wb + 4 * h;
                        sb[r] += u[0] * v.x + u[1] * v.y + u[2] * v.z + u[3] * v.w;
                    }
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++) {
        a[r] += sa[r];
        b[r] += sb[r];
    }
}

// 1 / rms of row xr as the one-row kernels reach it: each of the item's nt
// threads sums x^2 over its units (tid, tid + nt, ...) four values at a
// time, then warp_sum, then the kw warps' sums in order. Called by one
// warp, which plays the kw warps in turn; every lane gets the result.
__device__ __forceinline__ float mvr_inv_rms(const float* xr, int n_in, int kw, float eps) {
    const int lane = threadIdx.x & 31, nt = kw * 32, nu = n_in / 32;
    float total = 0.0f;
    for (int part = 0; part < kw; part++) {
        float ss = 0.0f;
        for (int idx = part * 32 + lane; idx < nu; idx += nt) {
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const float4 v = ld4(xr + (u64)idx * 32 + 4 * i);
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
        }
        ss = warp_sum(ss);
        total = part == 0 ? ss : total + ss;
    }
    return 1.0f / sqrtf(total / (float)n_in + eps);
}

// The loop of every mvr kernel (as q8_run in matvec_q8.cu): load the first
// item's first units, wait for the previous kernel, stage x and the norm
// weight, then each item of this block in turn: rows(item, &ra, &rb) names
// its weight rows (false: no such item), store(item, r0, nv, a, b, inv)
// writes its results (lanes 0..nv of the item's first warp).
template <int T, int NR, class Rows, class Store>
__device__ __forceinline__ void mvr_run(const float* x, int n_in, int n, const float* g,
                                        float eps, int kw, int n_items, Rows rows, Store store) {
    extern __shared__ __align__(16) u8 mvr_smem[];
    __shared__ float s_part[MVR_WARPS][2][NR];
    __shared__ float s_inv[NR];
    const int stride = STAGE_PAD(n_in);
    float* sx = (float*)mvr_smem;
    const int r0 = blockIdx.y * NR;
    const int nv = min(NR, n - r0);
    const int warp = threadIdx.x / 32, part = warp % kw;
    const int per_block = MVR_WARPS / kw;
    const int tid = part * 32 + (threadIdx.x & 31), nt = kw * 32;
    const int nu = n_in / 32;
    const int step = gridDim.x * per_block;
    typename Unit<T>::Raw na, nb;  // the next item's unit tid
    int item = blockIdx.x * per_block + warp / kw;
    const u8 *ra = nullptr, *rb = nullptr;
    bool active = first_item_units<T>(item, n_items, tid, nu, rows, ra, rb, na, nb);
    pdl_wait_then_trigger();
    {
        // x rows r0 .. r0 + nv, padded, float4 by float4, times the norm
        // weight if any (the one-row kernels' `v.x *= s.x`: the same
        // product for every item, so taken once here).
        const int q4 = n_in / 4;
        for (int e = threadIdx.x; e < nv * q4; e += blockDim.x) {
            const int r = e / q4, q = 4 * (e - r * q4);
            float4 v = ld4(x + (u64)(r0 + r) * n_in + q);
            if (g) {
                const float4 s = ld4(g + q);
                v.x *= s.x; v.y *= s.y; v.z *= s.z; v.w *= s.w;
            }
            *(float4*)(sx + r * stride + STAGE_PAD(q)) = v;
        }
        // Each row's 1 / rms, likewise the same for every item.
        for (int r = warp; r < nv; r += MVR_WARPS) {
            const float inv = g ? mvr_inv_rms(x + (u64)(r0 + r) * n_in, n_in, kw, eps) : 1.0f;
            if ((threadIdx.x & 31) == 0) s_inv[r] = inv;
        }
    }
    __syncthreads();
    for (int first = blockIdx.x * per_block; first < n_items; first += step) {
        item = first + warp / kw;
        const u8 *ca = ra, *cb = rb;
        const bool cur = active;
        // The next item of this warp, whose first units load during this one.
        active = item + step < n_items && rows(item + step, ra, rb);
        float a[NR], b[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) a[r] = b[r] = 0.0f;
        if (cur) {
            const bool two = cb != nullptr;
            for (int idx = tid; idx < nu; idx += nt) {
                typename Unit<T>::Raw wa, wb;
                item_units<T>(idx, tid, two, ca, cb, active, ra, rb, na, nb, wa, wb);
                mvr_unit<T, NR>(wa, wb, two, idx, sx, stride, nv, a, b);
            }
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            a[r] = warp_sum(a[r]);
            b[r] = warp_sum(b[r]);
        }
        join_item_sums<NR>(a, b, kw, part, s_part);
        if (cur && part == 0) {
            float inv[NR];
#pragma unroll
            for (int r = 0; r < NR; r++) inv[r] = r < nv ? s_inv[r] : 1.0f;
            store(item, r0, nv, a, b, inv);
        }
    }
}

template <int T, int NR>
__device__ __forceinline__ void mvr_plain_body(MvJob j, const float* x, int n_in, int n,
                                               const float* g, float eps, int accumulate, int kw) {
    mvr_run<T, NR>(
        x, n_in, n, g, eps, kw, (j.n_rows + 1) / 2,
        [&](int item, const u8*& ra, const u8*& rb) { return plain_rows(j, item, ra, rb); },
        [&](int item, int r0, int nv, float a[NR], float b[NR], float inv[NR]) {
            plain_store<NR>(j, 2 * item, r0, nv, a, b, inv, accumulate);
        });
}

template <int T, int NR>
__device__ __forceinline__ void mvr_qkv_body(MvJob jq, MvJob jk, MvJob jv, const float* x,
                                             int n_in, int n, const float* g, float eps,
                                             const u32* positions, const float* inv_freq,
                                             int head_dim, int n_rot, int neox, void* kc,
                                             void* vc, u64 layer_off, const u32* slots,
                                             int kv_f16, int kw, int item0, int item1) {
    mvr_run<T, NR>(
        x, n_in, n, g, eps, kw, item1 - item0,
        [&](int item, const u8*& ra, const u8*& rb) {
            return qkv_rows(qkv_item(jq, jk, jv, item0 + item, head_dim, n_rot, neox), ra, rb);
        },
        [&](int item, int r0, int nv, float a[NR], float b[NR], float inv[NR]) {
            const QkvItem q = qkv_item(jq, jk, jv, item0 + item, head_dim, n_rot, neox);
            qkv_store<NR>(q, jq, jk, r0, nv, a, b, inv, positions, inv_freq, kc, vc, layer_off,
                          slots, kv_f16);
        });
}

template <int T, int NR>
__device__ __forceinline__ void mvr_swiglu_body(MvJob jg, MvJob ju, const float* x, int n_in,
                                                int n, const float* g, float eps, int kw) {
    mvr_run<T, NR>(
        x, n_in, n, g, eps, kw, jg.n_rows,
        [&](int item, const u8*& ra, const u8*& rb) { return swiglu_rows(jg, ju, item, ra, rb); },
        [&](int item, int r0, int nv, float a[NR], float b[NR], float inv[NR]) {
            swiglu_store<NR>(jg, item, r0, nv, a, b, inv);
        });
}

#define SMELT_MVR_KERNELS(NR, SUFFIX, TT)                                                        \
    extern "C" __global__ void __launch_bounds__(MVR_WARPS * 32, SMELT_MVR_MIN_BLOCKS)                                 \
        mvr_plain_##NR##SUFFIX(MvJob j, const float* x, int n_in, int n, const float* g,         \
                               float eps, int accumulate, int kw) {                              \
        mvr_plain_body<TT, NR>(j, x, n_in, n, g, eps, accumulate, kw);                           \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MVR_WARPS * 32, SMELT_MVR_MIN_BLOCKS)                                 \
        mvr_qkv_##NR##SUFFIX(MvJob jq, MvJob jk, MvJob jv, const float* x, int n_in, int n,      \
                             const float* g, float eps, const u32* positions,                    \
                             const float* inv_freq, int head_dim, int n_rot, int neox, void* kc, \
                             void* vc, u64 layer_off, const u32* slots, int kv_f16, int kw,      \
                             int item0, int item1) {                                             \
        mvr_qkv_body<TT, NR>(jq, jk, jv, x, n_in, n, g, eps, positions, inv_freq, head_dim,      \
                             n_rot, neox, kc, vc, layer_off, slots, kv_f16, kw, item0, item1);   \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MVR_WARPS * 32, SMELT_MVR_MIN_BLOCKS)                                 \
        mvr_swiglu_##NR##SUFFIX(MvJob jg, MvJob ju, const float* x, int n_in, int n,             \
                                const float* g, float eps, int kw) {                             \
        mvr_swiglu_body<TT, NR>(jg, ju, x, n_in, n, g, eps, kw);                                 \
    }

SMELT_MVR_KERNELS(8, _q4_1, W_Q4_1)
SMELT_MVR_KERNELS(8, _q8_0, W_Q8_0)
