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
// row), sd (one scale per 32 values) and s16 (per 16 values: the scale
// times the sum of the 16 int8 values): x * (1 / rms(x)) * g with a norm
// weight g, else x. Every thread of the block calls this; the caller syncs
// before reading sq / sd.
__device__ __forceinline__ void stage_q8(const float* x, int n_in, int nv, const float* g,
                                         float eps, i8* sq, float* sd, float* s16) {
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
            const int q = __float2int_rn(v * id);
            sq[(u64)r * n_in + 32 * b + lane] = (i8)q;
            // The sums of each half's 16 values (exact integers), times
            // the group's scale: the K-quants' lanes take 16 values of a
            // group and need their sum for the block minimum / offset.
            int h16 = q;
#pragma unroll
            for (int o = 8; o > 0; o >>= 1) h16 += __shfl_xor_sync(0xffffffffu, h16, o);
            const float dx = amax / 127.0f;
            if (lane == 0) sd[(u64)r * nb + b] = dx;
            if ((lane & 15) == 0) s16[(u64)r * 2 * nb + 2 * b + (lane >> 4)] = dx * (float)h16;
        }
    }
}

// a += A . x (b += B . x when two) for unit idx of a row, x staged as int8
// (xq, n_in values) with scales xd (per 32 values) and xs (per 16 values:
// scale times sum). The unit layouts are units.cu's.
template <int T> struct QDot;

template <> struct QDot<W_Q4_1> {
    static __device__ __forceinline__ void dot(const Unit<W_Q4_1>::Raw& A, const Unit<W_Q4_1>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               const float*, float& a, float& b) {
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
                                               const float*, float& a, float& b) {
        const int4 x0 = *(const int4*)(xq + (u64)idx * 32);
        const int4 x1 = *(const int4*)(xq + (u64)idx * 32 + 16);
        const float dx = xd[idx];
        a += half_to_float((u16)A.d) * dx * (float)one(A, x0, x1);
        if (two) b += half_to_float((u16)B.d) * dx * (float)one(B, x0, x1);
    }
};

// Unsigned bytes of a times signed bytes of b, summed into c.
__device__ __forceinline__ int dp4us(u32 a, int b, int c) {
    int d;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}

template <> struct QDot<W_Q4_K> {
    // The 6-bit scales of groups 2c, 2c + 1 as bytes (sc_l, sc_h, m_l, m_h),
    // from the 12 scale bytes s (h.y, h.z, h.w). Groups below 4 keep theirs
    // in the low 6 bits of s[g] and s[g + 4]; groups 4..7 in the nibbles of
    // s[g + 4] with their top 2 bits in the top bits of s[g - 4] (scale) and
    // s[g] (min). c is the lane's, so the selectors are lane constants.
    static __device__ __forceinline__ u32 scale_bytes(const uint4& h, int c) {
        const u32 sel = (c & 1) ? 0x7632u : 0x5410u;
        // c < 2: s[2c], s[2c+1], s[2c+4], s[2c+5]; c >= 2: s[2c-4], s[2c-3], s[2c], s[2c+1].
        const u32 p = __byte_perm(h.y, h.z, sel);
        if (c < 2) return p & 0x3F3F3F3Fu;
        // s[2c+4], s[2c+5] twice: low nibbles are the scales, high the mins.
        const u32 q = __byte_perm(h.w, h.w, (c & 1) ? 0x3232u : 0x1010u);
        return (q & 0x00000F0Fu) | ((q >> 4) & 0x0F0F0000u) | ((p >> 2) & 0x30303030u);
    }
    // One row's two groups: d (sc dx sum(q xq)) - dmin (m dx sum(xq)) each;
    // the high nibbles are taken in place (16 q), so their scale is sc / 16.
    static __device__ __forceinline__ float one(const Unit<W_Q4_K>::Raw& R, int c, int4 xl, int4 xh,
                                                float dxl, float dxh, float sxl, float sxh) {
        const int il = dot4(R.q.x & 0x0F0F0F0F, R.q.y & 0x0F0F0F0F, R.q.z & 0x0F0F0F0F, R.q.w & 0x0F0F0F0F, xl);
        const int ih = dp4us(R.q.x & 0xF0F0F0F0u, xh.x,
                             dp4us(R.q.y & 0xF0F0F0F0u, xh.y,
                                   dp4us(R.q.z & 0xF0F0F0F0u, xh.z, dp4us(R.q.w & 0xF0F0F0F0u, xh.w, 0))));
        const u32 s = scale_bytes(R.h, c);
        const float scl = byte_f(s, 0) - 8388608.0f, sch = byte_f(s, 1) - 8388608.0f;
        const float ml = byte_f(s, 2) - 8388608.0f, mh = byte_f(s, 3) - 8388608.0f;
        const float q = (scl * dxl) * (float)il + (sch * 0.0625f * dxh) * (float)ih;
        const float m = ml * sxl + mh * sxh;
        return half_to_float((u16)(R.h.x & 0xFFFF)) * q - half_to_float((u16)(R.h.x >> 16)) * m;
    }
    static __device__ __forceinline__ void dot(const Unit<W_Q4_K>::Raw& A, const Unit<W_Q4_K>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               const float* xs, float& a, float& b) {
        // idx = threadIdx.x (mod 8) and xq at the unit's block, as in Unit<W_Q4_K>::dot.
        const int k = threadIdx.x & 7, c = k >> 1, hf = k & 1;
        const u64 blk = (u64)(idx >> 3);
        const u64 e0 = blk * 256 + 64 * c + 16 * hf;
        const int4 xl = *(const int4*)(xq + e0);
        const int4 xh = *(const int4*)(xq + e0 + 32);
        const float2 dx = *(const float2*)(xd + blk * 8 + 2 * c);
        const float sxl = xs[e0 / 16], sxh = xs[e0 / 16 + 2];
        a += one(A, c, xl, xh, dx.x, dx.y, sxl, sxh);
        if (two) b += one(B, c, xl, xh, dx.x, dx.y, sxl, sxh);
    }
};

template <> struct QDot<W_Q6_K> {
    // Group j of a row: d sc_j (dx_j sum(q xq) - 32 dx_j sum(xq)).
    static __device__ __forceinline__ float one(const Unit<W_Q6_K>::Raw& R, int j, int4 xw, float dx, float sx) {
        const u32* la = (j & 1) ? R.l1 : R.l0;
        u32 w[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            w[i] = ((j < 2 ? la[i] : la[i] >> 4) & 0x0F0F0F0F) | (((R.h[i] >> (2 * j)) & 0x03030303) << 4);
        const int s = dot4(w[0], w[1], w[2], w[3], xw);
        const float sc = u2f(((R.sc >> (8 * j)) & 0xFF) ^ 0x80) - 128.0f;
        return half_to_float((u16)R.d) * sc * (dx * (float)s - 32.0f * sx);
    }
    static __device__ __forceinline__ void dot(const Unit<W_Q6_K>::Raw& A, const Unit<W_Q6_K>::Raw& B,
                                               bool two, int idx, const i8* xq, const float* xd,
                                               const float* xs, float& a, float& b) {
        // idx = threadIdx.x (mod 4) and xq at the unit's block, as in Unit<W_Q6_K>::dot.
        const int k = threadIdx.x & 3, hh = k >> 1, l0 = 16 * (k & 1);
        const u64 blk = (u64)(idx >> 2);
        const u64 e0 = blk * 256 + 128 * hh + l0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int4 xw = *(const int4*)(xq + e0 + 32 * j);
            const float dx = xd[blk * 8 + 4 * hh + j];
            const float sx = xs[(e0 + 32 * j) / 16];
            a += one(A, j, xw, dx, sx);
            if (two) b += one(B, j, xw, dx, sx);
        }
    }
};

// The loop every q8 kernel runs. A warp takes every `stride`-th item from
// its first; rows(item, &ra, &rb) names an item's weight rows (rb may be
// null; false: no such item). An item's rows are read in chunks of nt
// units (one `Unit<T>` per lane of the item's kw warps), from pointers that
// step by a chunk's bytes (the lane's offsets within a chunk are constants).
// The first item's first chunk is loaded before the wait for the previous
// kernel; then x is staged. At the end of an item its kw warps' sums are
// added in order and store(item, r0, nv, a, b) writes them (lanes 0..nv of
// the item's first warp). Every thread of the block runs the same chunks
// (the barriers of kw > 1 are block-wide). (Asking L2 for the chunks a few
// steps ahead, `prefetch.global.L2`, was tried: 13 % slower on the 8B
// shape, 3 % on the 1B; so was loading the next chunk into a second set of
// registers while summing the current one: 5 % slower on the 8B shape, 2 %
// on the 1B, H100. Session 8: asking L2 for a warp's first 1, 2 or 8 items'
// whole rows before the wait, `cp.async.bulk.prefetch.L2`, in every decode
// product: 3-6 % slower on the 1B, 6-10 % on the 8B, same run.)
template <int T, int NR, class Rows, class Store>
__device__ __forceinline__ void q8_run(const float* x, int n_in, int n, const float* g, float eps,
                                       int kw, int n_items, Rows rows, Store store) {
    extern __shared__ __align__(16) u8 q8_smem[];
    __shared__ float s_part[MVQ_WARPS][2][NR];
    // Unit idx lies in block idx / UNITS (BYTES a block), so a chunk of nt
    // units (a multiple of UNITS) spans nt / UNITS blocks.
    constexpr int V = Unit<T>::VALUES, UNITS = Fmt<T>::QK / V, BYTES = Fmt<T>::BYTES;
    const int r0 = blockIdx.y * NR;
    const int nv = min(NR, n - r0);
    const int nb = n_in / 32;
    const i8* sq = (const i8*)q8_smem;
    const float* sd = (const float*)(q8_smem + (u64)NR * n_in);
    const float* s16 = sd + (u64)NR * nb;
    const int warp = threadIdx.x / 32, part = warp % kw;
    const int per_block = MVQ_WARPS / kw;
    const int tid = part * 32 + (threadIdx.x & 31), nt = kw * 32;
    const int nu = n_in / V;
    const int chunks = (nu + nt - 1) / nt;
    // Unit tid of a chunk lies in block tid / UNITS of the chunk (nt is a
    // multiple of UNITS): the lane's bytes and x values start there.
    const int lidx = tid % UNITS;
    const u64 wofs = (u64)(tid / UNITS) * BYTES;
    const int xofs = (tid / UNITS) * UNITS * V;
    const u64 chunk_bytes = (u64)(nt / UNITS) * BYTES;
    const int stride = gridDim.x * per_block;
    const int first0 = blockIdx.x * per_block;
    const int n_first = first0 < n_items ? (n_items - first0 + stride - 1) / stride : 0;

    int item = first0 + warp / kw;
    const u8 *ra = nullptr, *rb = nullptr;
    bool act = item < n_items && rows(item, ra, rb);
    typename Unit<T>::Raw wa, wb;
    if (act && tid < nu) {
        Unit<T>::load(ra + wofs, lidx, wa);
        if (rb) Unit<T>::load(rb + wofs, lidx, wb);
    }
    pdl_wait_then_trigger();
    stage_q8(x + (u64)r0 * n_in, n_in, nv, g, eps, (i8*)sq, (float*)sd, (float*)s16);
    __syncthreads();

#pragma unroll 1
    for (int f = 0; f < n_first; f++) {
        float a[NR], b[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) a[r] = b[r] = 0.0f;
        const u8* pa = ra + wofs;
        const u8* pb = rb ? rb + wofs : nullptr;
#pragma unroll 1
        for (int c = 0; c < chunks; c++) {
            const bool here = act && c * nt + tid < nu;
            if (here && (f > 0 || c > 0)) {
                Unit<T>::load(pa, lidx, wa);
                if (pb) Unit<T>::load(pb, lidx, wb);
            }
            if (here) {
                const int e = c * nt * V + xofs;
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (r < nv)
                        QDot<T>::dot(wa, wb, pb != nullptr, lidx, sq + (u64)r * n_in + e,
                                     sd + (u64)r * nb + e / 32, s16 + (u64)r * 2 * nb + e / 16,
                                     a[r], b[r]);
                }
            }
            pa += chunk_bytes;
            if (pb) pb += chunk_bytes;
        }
        // The item's warps' sums, in order; store; on to the next item.
#pragma unroll
        for (int r = 0; r < NR; r++) {
            a[r] = warp_sum(a[r]);
            b[r] = warp_sum(b[r]);
        }
        join_item_sums<NR>(a, b, kw, part, s_part);
        if (act && part == 0) store(item, r0, nv, a, b);
        item += stride;
        act = item < n_items && rows(item, ra, rb);
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
