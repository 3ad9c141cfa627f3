// Bulk-row GEMM for BF16 weights with x rounded to bfloat16 (session 13):
// out[m][n] (+)= sum_k x[m][k] * W[n][k] (+ bias[n]) like gemm.cu, with one
// tensor-core product per product where gemm.cu takes three and
// gemm_codes.cu two.
//
// Why: a BF16 weight is exact in one bf16; holding x to 16 significant bits
// (hi + lo) doubles or triples the tensor-core work, and gemm.cu's
// conversion of every weight to f32 and back costs as much again. Here x is
// rounded to bf16 (bulk_split_x's hi words: round to nearest even, relative
// error <= 2^-9, what cuBLAS's bf16 GEMMs and llama.cpp take), and the
// weights' raw bytes go straight from memory into shared memory
// (cp.async) and into the mma fragments. It is the BF16 member of the
// reduced-precision bulk products (gemm_q8.cu's int8 ones for quantized
// types), chosen by the same mode (src/bulk_q8.rs).
//
// Precision: the dot product of bf16(x) with the exact weights, accumulated
// in f32 on the tensor cores within a k tile and in f32 adds across tiles
// (tests/bulk_int8.rs holds it to the f64 product of bf16(x) and W).
//
// Batch invariance: an output's sum runs over k tiles of GBF_KT values in
// order; a tile's sum is a fresh accumulator through the same mma steps,
// then added to the running sum with __fadd_rn (or kept, split over k, and
// added in k order by gemm_sum_tiles: the same adds). The mma steps of an
// output read only its row of x and its row of W, whatever M, the tile or
// the row's place.
//
// Blocks of 256 threads (8 warps) compute 64 x BN outputs (BN = 128 or 64);
// warp w takes rows 32 (w / 4) .. +32 and columns BN/4 (w % 4) .. +BN/4.
// k tiles of 64 values flow through GBF_STAGES shared-memory buffers
// (cp.async, GBF_STAGES - 1 tiles in flight while one is multiplied).

#define GBF_KT 64
#define GBF_STAGES 3
// Row stride in bytes of a staged tile: 64 bf16 and 16 of padding (rows 36
// words apart: the 8 rows of an ldmatrix fall in different banks).
#define GBF_LD 144

// Dynamic shared memory of a block (src/bulk_q8.rs computes the same).
template <int BN> struct GbfSmem {
    static const int X = 0;                                  // [STAGES][64 * GBF_LD]
    static const int W = X + GBF_STAGES * 64 * GBF_LD;       // [STAGES][BN * GBF_LD]
    static const int BYTES = W + GBF_STAGES * BN * GBF_LD;
};

__device__ __forceinline__ void cp_async_wait_stages() {
    asm volatile("cp.async.wait_group %0;" ::"n"(GBF_STAGES - 2) : "memory");
}

template <int BN>
__device__ __forceinline__ void gemmb_body(const u8* w, u64 row_bytes, const u32* xh,
                                           float* out, const float* bias, int M, int N, int K,
                                           int ldo, int add, int kt_per, float* tiles) {
    constexpr int NT = BN / 32;
    typedef GbfSmem<BN> L;
    extern __shared__ __align__(16) u8 gbf_smem[];
    const u32 s_x = smem_addr(gbf_smem + L::X);
    const u32 s_w = smem_addr(gbf_smem + L::W);

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * (BN / 4);
    const int m0 = blockIdx.x * 64, n0 = blockIdx.y * BN;

    // Weights are never written by a kernel, but x, the scratch and out
    // come from earlier kernels.
    pdl_wait_then_trigger();

    const int n_kt = (K + GBF_KT - 1) / GBF_KT;
    const int kt_begin = blockIdx.z * kt_per;
    const int kt_end = min(n_kt, kt_begin + kt_per);

    // Copies k tile kt into stage s: 16-byte chunks (8 values) of x's rows
    // (rows past M read row M - 1; their outputs are not stored) and of
    // the weight rows (rows past N read row N - 1); chunks past K are
    // zero-filled, adding nothing.
    auto issue = [&](int kt, int s) {
        const int k0 = kt * GBF_KT;
        const u32 sx = s_x + (u32)(s * 64 * GBF_LD);
        const u32 sw = s_w + (u32)(s * BN * GBF_LD);
        for (int c = tid; c < 64 * 8; c += GQ_THREADS) {
            const int r = c / 8, ch = c % 8;
            const int k = k0 + 8 * ch;
            const u64 row = (u64)min(m0 + r, M - 1);
            const u32* src = xh + (row * (u64)K + (u64)min(k, K - 8)) / 2;
            cp_async16z(sx + (u32)(r * GBF_LD + ch * 16), src, k < K ? 16 : 0);
        }
        for (int c = tid; c < BN * 8; c += GQ_THREADS) {
            const int r = c / 8, ch = c % 8;
            const int k = k0 + 8 * ch;
            const u8* src = w + (u64)min(n0 + r, N - 1) * row_bytes + 2 * (u64)min(k, K - 8);
            cp_async16z(sw + (u32)(r * GBF_LD + ch * 16), src, k < K ? 16 : 0);
        }
    };

    float acc[2][NT][4];
    gq_zero<NT>(acc);
    const GqOut o{m0 + wm, n0 + wn, g, t, M, N};

    // ldmatrix row addresses of this lane's fragments (gemm.cu's layout,
    // in bytes): A tiles take rows lane % 16 and k words (lane / 16) * 4;
    // B pairs of n8 tiles take rows (lane / 16) * 8 + lane % 8 and k words
    // ((lane / 8) % 2) * 4.
    const u32 a_off = (u32)((wm + lane % 16) * GBF_LD + (lane / 16) * 16);
    const u32 b_off = (u32)((wn + (lane / 16) * 8 + lane % 8) * GBF_LD + ((lane / 8) % 2) * 16);

    // The first GBF_STAGES - 1 tiles in flight (one commit group each, empty
    // past the end, so the wait below counts the same groups every tile).
#pragma unroll
    for (int s = 0; s < GBF_STAGES - 1; s++) {
        if (kt_begin + s < kt_end) issue(kt_begin + s, s);
        cp_async_commit();
    }
    for (int kt = kt_begin; kt < kt_end; kt++) {
        const int s = (kt - kt_begin) % GBF_STAGES;
        cp_async_wait_stages();
        __syncthreads();
        // The stage read one tile ago is free (every warp passed the
        // barrier): the tile GBF_STAGES - 1 ahead goes there.
        {
            const int ahead = kt + GBF_STAGES - 1;
            if (ahead < kt_end) issue(ahead, (ahead - kt_begin) % GBF_STAGES);
            cp_async_commit();
        }
        const u32 sx = s_x + (u32)(s * 64 * GBF_LD) + a_off;
        const u32 sw = s_w + (u32)(s * BN * GBF_LD) + b_off;
        float ts[2][NT][4];
#pragma unroll
        for (int kk = 0; kk < GBF_KT / 16; kk++) {
            u32 a[2][4], b[NT][2];
#pragma unroll
            for (int i = 0; i < 2; i++) ldmatrix_x4(sx + (u32)(i * 16 * GBF_LD + 32 * kk), a[i]);
#pragma unroll
            for (int nt = 0; nt < NT; nt += 2) {
                u32 r[4];
                ldmatrix_x4(sw + (u32)(nt * 8 * GBF_LD + 32 * kk), r);
                b[nt][0] = r[0]; b[nt][1] = r[1]; b[nt + 1][0] = r[2]; b[nt + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    if (kk == 0) mma_bf16_zero(ts[i][nt], a[i], b[nt]);
                    else mma_bf16(ts[i][nt], a[i], b[nt]);
                }
        }
        gq_tile_sum<NT>(o, acc, ts, tiles, kt);
    }
    // (Empty groups may remain; nothing is in flight past the last tile.)
    cp_async_wait_all();
    if (tiles) return;
    gq_store<NT>(o, acc, out, bias, ldo, add);
}

// gemmq_bf16 (128-wide tiles) and gemmq_bf16_n64 (64-wide), with the int8
// kernels' arguments: xq is bulk_split_x's hi words; w_len, xd and xs are
// unused.
extern "C" __global__ void __launch_bounds__(GQ_THREADS, 2)
    gemmq_bf16(const u8* w, u64 row_bytes, u64 w_len, const i8* xq, const float* xd,
               const float* xs, float* out, const float* bias, int M, int N, int K, int ldo,
               int add, int kt_per, float* tiles) {
    gemmb_body<128>(w, row_bytes, (const u32*)xq, out, bias, M, N, K, ldo, add, kt_per, tiles);
}
extern "C" __global__ void __launch_bounds__(GQ_THREADS, 2)
    gemmq_bf16_n64(const u8* w, u64 row_bytes, u64 w_len, const i8* xq, const float* xd,
                   const float* xs, float* out, const float* bias, int M, int N, int K, int ldo,
                   int add, int kt_per, float* tiles) {
    gemmb_body<64>(w, row_bytes, (const u32*)xq, out, bias, M, N, K, ldo, add, kt_per, tiles);
}
