// Tensor-core matrix products for bulk rows (prompt rows whose logits no one
// reads; see src/bulk.rs):  out[m][n] (+)= sum_k x[m][k] * W[n][k] (+ bias[n])
// for m < M batch rows and n < N weight rows of K values.
//
// Precision: each f32 value v (an input, or a weight dequantized by
// `dequant8` exactly as the matrix-vector kernels and the reference do) is
// split into two bfloat16s, hi = bf16(v) and lo = bf16(v - hi), so
// hi + lo holds 16 significant bits (relative error <= 2^-17). A product is
// taken as lo_x*hi_w + hi_x*lo_w + hi_x*hi_w on the tensor cores
// (mma.sync m16n8k16, f32 accumulation; the dropped lo*lo term is below
// 2^-16 of the product). The three products of one 32-value k tile are
// summed into a fresh accumulator, which is then added to the running sum
// with an ordinary f32 add, so the tensor cores' accumulation error is
// relative to one tile's partial sum, not to the whole dot product.
//
// Batch invariance: an output's sum runs over the k tiles in order, each
// tile's products in the same three mma steps, whatever M is, where the row
// lies in its tile, and what the other rows hold (rows and columns past M,
// N and K are zeros, which add nothing). Tile sizes change only which
// block computes an output, never how.
//
// Blocks of GB_THREADS threads (8 warps) compute GB_M x BN outputs (BN =
// 128, or 64 where 128 would leave SMs idle); warp w takes rows 32 (w / 4)
// .. +32 and columns BN/4 (w % 4) .. +BN/4: 2 x BN/32 mma tiles of 16 x 8.
// Each k tile of x and W is dequantized, split and stored once in shared
// memory (rows of GB_LDW words: the padding makes the fragment loads
// conflict-free), then read as mma fragments.

#define GB_M 64
#define GB_K 32
#define GB_THREADS 256
// Shared row stride in 32-bit words (2 bf16 each): 16 for the 32 values of
// a k tile, 4 of padding.
#define GB_LDW 20

// The hi and lo bfloat16 pairs of (a, b): a in the low half, b in the high
// (the order mma fragments want: lower k in the lower half).
__device__ __forceinline__ void split_bf16x2(float a, float b, u32* hi, u32* lo) {
    u32 h;
    asm("{ cvt.rn.bf16x2.f32 %0, %1, %2; }" : "=r"(h) : "f"(b), "f"(a));
    const float ra = a - __uint_as_float(h << 16);
    const float rb = b - __uint_as_float(h & 0xFFFF0000u);
    u32 l;
    asm("{ cvt.rn.bf16x2.f32 %0, %1, %2; }" : "=r"(l) : "f"(rb), "f"(ra));
    *hi = h;
    *lo = l;
}

// Splits 8 values and stores them at 4 words of sh / sl (16-byte aligned).
__device__ __forceinline__ void store_split8(const float v[8], u32* sh, u32* sl) {
    uint4 h, l;
    split_bf16x2(v[0], v[1], &h.x, &l.x);
    split_bf16x2(v[2], v[3], &h.y, &l.y);
    split_bf16x2(v[4], v[5], &h.z, &l.z);
    split_bf16x2(v[6], v[7], &h.w, &l.w);
    *(uint4*)sh = h;
    *(uint4*)sl = l;
}

// The shared-space address of a shared array (for ldmatrix).
__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// Four 8 x 8 matrices of 16-bit values from shared memory: lanes 8 j ..
// 8 j + 7 give the row addresses of matrix j; r[j] receives this lane's
// pair (row lane / 4, columns 2 (lane % 4) ..) of matrix j: the mma
// fragment layout.
__device__ __forceinline__ void ldmatrix_x4(u32 addr, u32 r[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// d += a * b for one m16n8k16 tile (bf16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_bf16(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// x: M rows of K f32 at stride K; out: rows of stride ldo; bias: N f32 or
// null; add: out += result instead of out = result.
// WHOLE: K is a multiple of GB_K (see `fetch`). The shared tiles (hi and lo
// parts of x: GB_M rows, of W: BN rows, GB_LDW words each) are the
// kernel's, so both instantiations share them.
//
// Split over k (`tiles` not null: few output blocks, so blocks along z take
// kt_per k tiles each): each k tile's sum (its fresh accumulator) is stored
// at tiles[(kt * M + m) * N + n] instead of being added to a running sum,
// and `gemm_sum_tiles` adds them in k order afterwards: the same f32 adds
// in the same order as one block would make, so the same bits.
template <int T, int BN, bool WHOLE>
__device__ __forceinline__ void gemm_body(const u8* w, u64 row_bytes, const float* x,
                                          float* out, const float* bias, int M, int N, int K,
                                          int ldo, int add, int kt_per, float* tiles,
                                          u32* s_xh, u32* s_xl, u32* s_wh, u32* s_wl) {
    // n8 tiles per warp.
    constexpr int NT = BN / 32;

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * (BN / 4);
    const int m0 = blockIdx.x * GB_M, n0 = blockIdx.y * BN;

    // Weights are never written by a kernel: nothing to wait for before
    // reading them, but x and out come from the previous kernel.
    pdl_wait_then_trigger();

    float acc[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    // This thread's share of a k tile: one 8-value chunk of x (row xr,
    // chunk xc) and BN / 64 chunks of W (rows xr + 64 i, chunk xc).
    const int xr = tid / 4, xc = tid % 4;
    float xv[8], wv[BN / 64][8];
    // Rows of whole k tiles (every quantized type; float types whose rows
    // are a multiple of 32): every load is in bounds after clamping the row,
    // so a tile is fetched without branches, and the fetch of the next tile
    // is scheduled among the current tile's mma instructions (software
    // pipelining: the loads' latency hides behind them). Rows past M or N
    // are clamped for the load and zeroed after it.
    auto fetch = [&](int k0) {
        const int m = m0 + xr, k = k0 + xc * 8;
        if (WHOLE) {
            const float* xp = x + (u64)min(m, M - 1) * K + k;
            const float4 a = *(const float4*)xp;
            const float4 b = *(const float4*)(xp + 4);
            const bool in = m < M;
            xv[0] = in ? a.x : 0.0f; xv[1] = in ? a.y : 0.0f;
            xv[2] = in ? a.z : 0.0f; xv[3] = in ? a.w : 0.0f;
            xv[4] = in ? b.x : 0.0f; xv[5] = in ? b.y : 0.0f;
            xv[6] = in ? b.z : 0.0f; xv[7] = in ? b.w : 0.0f;
#pragma unroll
            for (int i = 0; i < BN / 64; i++) {
                const int n = n0 + xr + 64 * i;
                dequant8<T>(w + (u64)min(n, N - 1) * row_bytes, k0 / 8 + xc, K, wv[i]);
#pragma unroll
                for (int j = 0; j < 8; j++) wv[i][j] = n < N ? wv[i][j] : 0.0f;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) xv[i] = (m < M && k + i < K) ? x[(u64)m * K + k + i] : 0.0f;
#pragma unroll
            for (int i = 0; i < BN / 64; i++) {
                const int n = n0 + xr + 64 * i;
                if (n < N) {
                    dequant8<T>(w + (u64)n * row_bytes, k0 / 8 + xc, K, wv[i]);
                } else {
#pragma unroll
                    for (int j = 0; j < 8; j++) wv[i][j] = 0.0f;
                }
            }
        }
    };
    // Shared-space addresses of this lane's ldmatrix rows: A (x) tiles
    // take rows lane % 16 and k words (lane / 16) * 4; B (W) pairs of n8
    // tiles take rows (lane / 16) * 8 + lane % 8 and k words
    // ((lane / 8) % 2) * 4.
    const u32 a_off = (u32)(((wm + lane % 16) * GB_LDW + (lane / 16) * 4) * 4);
    const u32 b_off = (u32)(((wn + (lane / 16) * 8 + lane % 8) * GB_LDW + ((lane / 8) % 2) * 4) * 4);
    const u32 sxh = smem_addr(s_xh), sxl = smem_addr(s_xl);
    const u32 swh = smem_addr(s_wh), swl = smem_addr(s_wl);

    const int k_begin = blockIdx.z * kt_per * GB_K;
    const int k_end = min(K, k_begin + kt_per * GB_K);
    fetch(k_begin);
    for (int k0 = k_begin; k0 < k_end; k0 += GB_K) {
        store_split8(xv, s_xh + xr * GB_LDW + xc * 4, s_xl + xr * GB_LDW + xc * 4);
#pragma unroll
        for (int i = 0; i < BN / 64; i++) {
            const int r = xr + 64 * i;
            store_split8(wv[i], s_wh + r * GB_LDW + xc * 4, s_wl + r * GB_LDW + xc * 4);
        }
        __syncthreads();
        // The next tile (with whole tiles, the last one again at the end:
        // no branch here, so the fetch can interleave with the mma below).
        if (WHOLE) {
            fetch(min(k0 + GB_K, k_end - GB_K));
        } else if (k0 + GB_K < k_end) {
            fetch(k0 + GB_K);
        }

        float p[2][NT][4];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) p[i][j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < GB_K / 2; kk += 8) {  // words: k 0..15, 16..31
            u32 ah[2][4], al[2][4], bh[NT][2], bl[NT][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const u32 o = a_off + (u32)((i * 16 * GB_LDW + kk) * 4);
                ldmatrix_x4(sxh + o, ah[i]);
                ldmatrix_x4(sxl + o, al[i]);
            }
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                const u32 o = b_off + (u32)((j * 8 * GB_LDW + kk) * 4);
                u32 h[4], l[4];
                ldmatrix_x4(swh + o, h);
                ldmatrix_x4(swl + o, l);
                bh[j][0] = h[0]; bh[j][1] = h[1]; bh[j + 1][0] = h[2]; bh[j + 1][1] = h[3];
                bl[j][0] = l[0]; bl[j][1] = l[1]; bl[j + 1][0] = l[2]; bl[j + 1][1] = l[3];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    mma_bf16(p[i][j], al[i], bh[j]);
                    mma_bf16(p[i][j], ah[i], bl[j]);
                    mma_bf16(p[i][j], ah[i], bh[j]);
                }
        }
        if (tiles) {
            const u64 kt = (u64)(k0 / GB_K);
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int m = m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0);
                        const int n = n0 + wn + j * 8 + 2 * t + (e & 1);
                        if (m < M && n < N) tiles[(kt * M + m) * N + n] = p[i][j][e];
                    }
        } else {
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[i][j][e] += p[i][j][e];
        }
        __syncthreads();
    }
    if (tiles) return;

    // Fragment element e of tile (i, j): row g (+8 for e >= 2), column
    // 2t + (e & 1).
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0);
                const int n = n0 + wn + j * 8 + 2 * t + (e & 1);
                if (m < M && n < N) {
                    float v = acc[i][j][e];
                    if (bias) v += bias[n];
                    float* o = out + (u64)m * ldo + n;
                    *o = add ? *o + v : v;
                }
            }
}

template <int T, int BN>
__device__ __forceinline__ void gemm_kernel(const u8* w, u64 row_bytes, const float* x,
                                            float* out, const float* bias, int M, int N, int K,
                                            int ldo, int add, int kt_per, float* tiles) {
    __shared__ __align__(16) u32 s_xh[GB_M * GB_LDW];
    __shared__ __align__(16) u32 s_xl[GB_M * GB_LDW];
    __shared__ __align__(16) u32 s_wh[BN * GB_LDW];
    __shared__ __align__(16) u32 s_wl[BN * GB_LDW];
    if (K % GB_K == 0) {
        gemm_body<T, BN, true>(w, row_bytes, x, out, bias, M, N, K, ldo, add, kt_per, tiles, s_xh, s_xl, s_wh, s_wl);
    } else {
        gemm_body<T, BN, false>(w, row_bytes, x, out, bias, M, N, K, ldo, add, kt_per, tiles, s_xh, s_xl, s_wh, s_wl);
    }
}

// gemm_<type> (128-wide tiles) and gemm_<type>_n64 (64-wide).
#define SMELT_GEMM_KERNEL(NAME, T)                                                            \
    extern "C" __global__ void __launch_bounds__(GB_THREADS, 2)                               \
        gemm_##NAME(const u8* w, u64 row_bytes, const float* x, float* out,                  \
                    const float* bias, int M, int N, int K, int ldo, int add, int kt_per,     \
                    float* tiles) {                                                           \
        gemm_kernel<T, 128>(w, row_bytes, x, out, bias, M, N, K, ldo, add, kt_per, tiles);    \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(GB_THREADS, 2)                               \
        gemm_##NAME##_n64(const u8* w, u64 row_bytes, const float* x, float* out,            \
                          const float* bias, int M, int N, int K, int ldo, int add,           \
                          int kt_per, float* tiles) {                                         \
        gemm_kernel<T, 64>(w, row_bytes, x, out, bias, M, N, K, ldo, add, kt_per, tiles);     \
    }

// The k tiles' sums of a split product (see gemm_body), added in k order,
// then the bias and the output as gemm_body's epilogue does.
extern "C" __global__ void gemm_sum_tiles(const float* tiles, int n_tiles, int M, int N,
                                          float* out, int ldo, const float* bias, int add) {
    pdl_wait_then_trigger();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (u64)M * N) return;
    const int m = (int)(i / N), n = (int)(i % N);
    float acc = 0.0f;
    for (int kt = 0; kt < n_tiles; kt++) acc += tiles[((u64)kt * M + m) * N + n];
    float v = acc;
    if (bias) v += bias[n];
    float* o = out + (u64)m * ldo + n;
    *o = add ? *o + v : v;
}

SMELT_GEMM_KERNEL(f32, W_F32)
SMELT_GEMM_KERNEL(f16, W_F16)
SMELT_GEMM_KERNEL(bf16, W_BF16)
SMELT_GEMM_KERNEL(q4_0, W_Q4_0)
SMELT_GEMM_KERNEL(q4_1, W_Q4_1)
SMELT_GEMM_KERNEL(q5_0, W_Q5_0)
SMELT_GEMM_KERNEL(q5_1, W_Q5_1)
SMELT_GEMM_KERNEL(q8_0, W_Q8_0)
SMELT_GEMM_KERNEL(q2_k, W_Q2_K)
SMELT_GEMM_KERNEL(q3_k, W_Q3_K)
SMELT_GEMM_KERNEL(q4_k, W_Q4_K)
SMELT_GEMM_KERNEL(q5_k, W_Q5_K)
SMELT_GEMM_KERNEL(q6_k, W_Q6_K)
