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
// Blocks of GB_THREADS threads (8 warps) compute GB_M x GB_N outputs; warp w
// takes rows 32 (w / 4) .. +32 and columns 32 (w % 4) .. +32: 2 x 4 mma
// tiles of 16 x 8. Each k tile of x and W is dequantized, split and stored
// once in shared memory (rows of GB_LD bf16: the padding makes the fragment
// loads conflict-free), then read as mma fragments.

#define GB_M 64
#define GB_N 128
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
template <int T>
__device__ __forceinline__ void gemm_body(const u8* w, u64 row_bytes, const float* x,
                                          float* out, const float* bias, int M, int N, int K,
                                          int ldo, int add) {
    __shared__ __align__(16) u32 s_xh[GB_M * GB_LDW];
    __shared__ __align__(16) u32 s_xl[GB_M * GB_LDW];
    __shared__ __align__(16) u32 s_wh[GB_N * GB_LDW];
    __shared__ __align__(16) u32 s_wl[GB_N * GB_LDW];

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * 32;
    const int m0 = blockIdx.x * GB_M, n0 = blockIdx.y * GB_N;

    // Weights are never written by a kernel: nothing to wait for before
    // reading them, but x and out come from the previous kernel.
    pdl_wait_then_trigger();

    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    const bool x_vec = (K % 4) == 0;
    for (int k0 = 0; k0 < K; k0 += GB_K) {
        // x: one chunk of 8 per thread (64 rows x 4 chunks).
        {
            const int r = tid / 4, c = tid % 4;
            const int m = m0 + r, k = k0 + c * 8;
            float v[8];
            if (m < M && x_vec && k + 8 <= K) {
                const float4 a = *(const float4*)(x + (u64)m * K + k);
                const float4 b = *(const float4*)(x + (u64)m * K + k + 4);
                v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
                v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) v[i] = (m < M && k + i < K) ? x[(u64)m * K + k + i] : 0.0f;
            }
            store_split8(v, s_xh + r * GB_LDW + c * 4, s_xl + r * GB_LDW + c * 4);
        }
        // W: two chunks of 8 per thread (128 rows x 4 chunks).
#pragma unroll
        for (int i = 0; i < 2; i++) {
            const int idx = tid + i * GB_THREADS;
            const int r = idx / 4, c = idx % 4;
            const int n = n0 + r;
            float v[8];
            if (n < N) {
                dequant8<T>(w + (u64)n * row_bytes, k0 / 8 + c, K, v);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++) v[j] = 0.0f;
            }
            store_split8(v, s_wh + r * GB_LDW + c * 4, s_wl + r * GB_LDW + c * 4);
        }
        __syncthreads();

        float p[2][4][4];
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) p[i][j][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < GB_K / 2; kk += 8) {  // words: k 0..15, 16..31
            u32 ah[2][4], al[2][4], bh[4][2], bl[4][2];
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int r = wm + i * 16 + g;
                const int o0 = r * GB_LDW + kk + t, o1 = (r + 8) * GB_LDW + kk + t;
                ah[i][0] = s_xh[o0];     al[i][0] = s_xl[o0];
                ah[i][1] = s_xh[o1];     al[i][1] = s_xl[o1];
                ah[i][2] = s_xh[o0 + 4]; al[i][2] = s_xl[o0 + 4];
                ah[i][3] = s_xh[o1 + 4]; al[i][3] = s_xl[o1 + 4];
            }
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int o = (wn + j * 8 + g) * GB_LDW + kk + t;
                bh[j][0] = s_wh[o];     bl[j][0] = s_wl[o];
                bh[j][1] = s_wh[o + 4]; bl[j][1] = s_wl[o + 4];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    mma_bf16(p[i][j], al[i], bh[j]);
                    mma_bf16(p[i][j], ah[i], bl[j]);
                    mma_bf16(p[i][j], ah[i], bh[j]);
                }
        }
#pragma unroll
        for (int i = 0; i < 2; i++)
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) acc[i][j][e] += p[i][j][e];
        __syncthreads();
    }

    // Fragment element e of tile (i, j): row g (+8 for e >= 2), column
    // 2t + (e & 1).
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
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

#define SMELT_GEMM_KERNEL(NAME, T)                                                            \
    extern "C" __global__ void __launch_bounds__(GB_THREADS, 2)                               \
        gemm_##NAME(const u8* w, u64 row_bytes, const float* x, float* out,                  \
                    const float* bias, int M, int N, int K, int ldo, int add) {               \
        gemm_body<T>(w, row_bytes, x, out, bias, M, N, K, ldo, add);                          \
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
