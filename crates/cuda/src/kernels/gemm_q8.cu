// Bulk-row GEMM with 8-bit activations (session 12): out[m][n] (+)=
// sum_k x[m][k] * W[n][k] (+ bias[n]) like gemm.cu, for Q4_1, Q8_0, Q4_K
// and Q6_K weights, on the integer tensor cores.
//
// Why: gemm.cu and gemm_codes.cu hold x to 16 significant bits, which costs
// two or three bf16 products per product. The decode path already runs the
// large matrices of 1B+ models with x quantized to int8 per 32 values
// (matvec_q8.cu, `Q8Mode::Auto`); here the bulk rows of the same weights do
// too: x is quantized once per input (bulk_quant_x: amax / 127, nearest
// even, as stage_q8 does), the weights' codes are exact int8 (Q4_1 / Q4_K
// nibbles, Q8_0 bytes, Q6_K's 6-bit values less 32), and one
// `mma.sync m16n8k32.s8` (two m16n8k16 for Q6_K's 16-value groups) gives a
// group's exact integer dot product, which is then scaled in f32:
//     group term = (dx d_w) * sum(q_x q_w) + m_w * (dx sum(q_x))
// (m_w the group's offset: Q4_1's m, Q4_K's -dmin * min).
//
// The integer sums come out of the tensor cores already as floats' bits:
// the accumulator starts at the bits of 1.5 * 2^23, so the result's bits
// are those of 1.5 * 2^23 + sum (|sum| < 2^22 for every type here), and one
// f32 subtraction gives the sum exactly, with no int-to-float conversion
// (a quarter-rate unit).
//
// Precision: the dot product of the dequantized weights with x rounded to
// int8 per 32 values (the q8 decode kernels' rounding), up to f32 rounding
// of the group terms (tests/bulk_int8.rs holds it to a host model of
// exactly that).
//
// Batch invariance: an output's sum runs over k tiles of 256 values in
// order; a tile's sum is a fresh f32 sum of its groups' terms in order,
// then added to the running sum (or kept, split over k, and added in k
// order by gemm_sum_tiles: the same adds). Every term is computed the same
// way whatever M, the tile width or the row's place, and every product and
// sum is written with explicit rounding (__fmul_rn, __fmaf_rn, __fadd_rn),
// so the compiler contracts nothing differently between kernels.
//
// Blocks of 256 threads (8 warps) compute 64 x BN outputs (BN = 128 or 64);
// warp w takes rows 32 (w / 4) .. +32 and columns BN/4 (w % 4) .. +BN/4.
// Per k tile, x's int8 codes and scales and the weights' raw bytes (the
// 16-byte-aligned span holding the tile's blocks, so every copy is a 16-byte
// cp.async whatever the type's block alignment) are copied into shared
// memory a tile ahead; the weights' group scales are decoded once per tile
// into shared memory, and each lane builds its mma weight fragments from
// the raw bytes directly (a mask and shift a word).

#define GQ_KT 256
#define GQ_THREADS 256
// Bytes per staged x row: 256 codes and 16 of padding (conflict-free
// ldmatrix: rows 68 words apart).
#define GQ_XLD 272
// 1.5 * 2^23: an int32 accumulator started at these bits ends as the bits
// of the float 1.5 * 2^23 + sum while |sum| < 2^22.
#define GQ_MAGIC 0x4B400000
#define GQ_MAGIC_F 12582912.0f

// x rows (M rows of K f32, K a multiple of 32) to int8 codes per 32 values
// (amax / 127, nearest even; stage_q8's rounding), each group's scale dx
// and dx times the sum of its codes. One warp per group.
extern "C" __global__ void bulk_quant_x(const float* x, int M, int K, i8* xq, float* xd,
                                        float* xs) {
    pdl_wait_then_trigger();
    const u64 n_groups = (u64)M * K / 32;
    const u64 grp = ((u64)blockIdx.x * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    // Whole warps return together (blocks are a multiple of 32 threads).
    if (grp >= n_groups) return;
    const float v = x[grp * 32 + lane];
    const float amax = warp_max(fabsf(v));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    const int q = __float2int_rn(v * id);
    xq[grp * 32 + lane] = (i8)q;
    int s = q;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) {
        const float dx = amax / 127.0f;
        xd[grp] = dx;
        xs[grp] = dx * (float)s;
    }
}

// Per type: CH 16-byte chunks of raw bytes staged per weight row and k tile
// (the tile's bytes plus up to 14 of misalignment, rounded up to an odd
// count so the rows of a fragment load fall in different banks); G scale
// groups per tile; OFFSET whether a group has an offset term.
template <int T> struct GqFmt;
template <> struct GqFmt<W_Q4_1> { static const int CH = 11; static const int G = 8;  static const bool OFFSET = true; };
template <> struct GqFmt<W_Q8_0> { static const int CH = 19; static const int G = 8;  static const bool OFFSET = false; };
template <> struct GqFmt<W_Q4_K> { static const int CH = 11; static const int G = 8;  static const bool OFFSET = true; };
template <> struct GqFmt<W_Q6_K> { static const int CH = 15; static const int G = 16; static const bool OFFSET = false; };

// Dynamic shared memory of a block (src/bulk.rs computes the same).
template <int T, int BN> struct GqSmem {
    static const int WLD = GqFmt<T>::CH * 16;
    static const int X = 0;                                // [2][64 * GQ_XLD] int8 codes
    static const int W = X + 2 * 64 * GQ_XLD;              // [2][BN * WLD] raw weight bytes
    static const int XD = W + 2 * BN * WLD;                // [2][8][64] f32 dx
    static const int XS = XD + 2 * 8 * 64 * 4;             // [2][8][64] f32 dx sum(q)
    static const int DW = XS + 2 * 8 * 64 * 4;             // [G][BN] f32 group scale
    static const int MW = DW + GqFmt<T>::G * BN * 4;       // [8][BN] f32 group offset
    static const int SHIFT = MW + 8 * BN * 4;              // [2][BN] int: block start in the span
    static const int BYTES = SHIFT + 2 * BN * 4;
};

// Async copies (16 bytes: src_size of them read, the rest zero-filled; 4
// bytes), waited for by cp_async_wait_all (gemm_codes.cu).
__device__ __forceinline__ void cp_async16z(u32 dst, const void* src, u32 src_size) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_size));
}
__device__ __forceinline__ void cp_async4(u32 dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(src));
}

// d = a * b + magic for one m16n8k32 tile of int8 (the result as float bits).
__device__ __forceinline__ void mma_s8_k32(int d[4], const u32 a[4], const u32 b[2]) {
    asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(GQ_MAGIC));
}

// The same for m16n8k16 (a0, a1 the fragment's two words).
__device__ __forceinline__ void mma_s8_k16(int d[4], u32 a0, u32 a1, u32 b) {
    asm("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 "
        "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %7, %7, %7};"
        : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
        : "r"(a0), "r"(a1), "r"(b), "r"(GQ_MAGIC));
}

// The exact integer sum an mma above left as float bits.
__device__ __forceinline__ float gq_sum(int d) {
    return __fsub_rn(__int_as_float(d), GQ_MAGIC_F);
}

// Per byte, q - 32 for q in 0..63 (Q6_K's codes), as signed bytes.
__device__ __forceinline__ u32 minus32x4(u32 q) {
    return ((q | 0x80808080u) - 0x20202020u) ^ 0x80808080u;
}

// This lane's weight fragment for 32-value group j of the block at p
// (staged raw bytes): codes k = 4t .. 4t + 3 (b[0]) and 16 + 4t .. (b[1]).
template <int T>
__device__ __forceinline__ void gq_codes(const u8* p, int j, int t, u32 b[2]) {
    if (T == W_Q4_K) {
        // 16-byte aligned; chunk j / 2's 32 bytes, low nibbles for even j.
        const u8* q = p + 16 + 32 * (j / 2) + 4 * t;
        const int sh = 4 * (j & 1);
        b[0] = (*(const u32*)q >> sh) & 0x0F0F0F0Fu;
        b[1] = (*(const u32*)(q + 16) >> sh) & 0x0F0F0F0Fu;
    } else if (T == W_Q4_1) {
        // 4-byte aligned; block j's 16 bytes: low nibbles 0..15, high 16..31.
        const u32 v = *(const u32*)(p + 20 * j + 4 + 4 * t);
        b[0] = v & 0x0F0F0F0Fu;
        b[1] = (v >> 4) & 0x0F0F0F0Fu;
    } else if (T == W_Q8_0) {
        // 2-byte aligned; block j's 32 signed bytes.
        const u8* q = p + 34 * j + 2 + 4 * t;
        b[0] = ld_u32_a2(q);
        b[1] = ld_u32_a2(q + 16);
    }
}

// Q6_K: the fragment word of 16-value group jj (values 16 jj + 4t .. + 3).
__device__ __forceinline__ u32 gq_codes_q6k(const u8* p, int jj, int t) {
    const int e = 16 * jj, h = e / 128, w = e % 128;
    const u32 l = ld_u32_a2(p + 64 * h + (w % 64) + 4 * t);
    const u32 hb = ld_u32_a2(p + 128 + 32 * h + (w % 32) + 4 * t);
    const u32 q = ((l >> (w >= 64 ? 4 : 0)) & 0x0F0F0F0Fu) | (((hb >> (2 * (w / 32))) & 0x03030303u) << 4);
    return minus32x4(q);
}

// The tile's group scales (and offsets) of every staged weight row into
// s_dw[G][BN] / s_mw[8][BN]; ng 32-value groups are in the tile.
template <int T, int BN>
__device__ __forceinline__ void gq_scales(const u8* sw, const int* shift, int ng, float* s_dw,
                                          float* s_mw) {
    constexpr int WLD = GqFmt<T>::CH * 16;
    if (T == W_Q4_K) {
        for (int c = threadIdx.x; c < BN * 2; c += GQ_THREADS) {
            const int r = c / 2, half = c % 2;
            const u8* blk = sw + r * WLD + shift[r];
            const float d = ld_half(blk), dmin = ld_half(blk + 2);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const int j = 4 * half + i;
                int sc, mn;
                scale_min_k4(blk + 4, j, &sc, &mn);
                s_dw[j * BN + r] = d * u2f(sc);
                s_mw[j * BN + r] = -(dmin * u2f(mn));
            }
        }
    } else if (T == W_Q6_K) {
        for (int c = threadIdx.x; c < BN * 2; c += GQ_THREADS) {
            const int r = c / 2, half = c % 2;
            const u8* blk = sw + r * WLD + shift[r];
            const float d = ld_half(blk + 208);
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int j = 8 * half + i;
                s_dw[j * BN + r] = d * (u2f(blk[192 + j] ^ 0x80) - 128.0f);
            }
        }
    } else {
        for (int c = threadIdx.x; c < BN * 8; c += GQ_THREADS) {
            const int r = c / 8, j = c % 8;
            if (j >= ng) continue;
            const u8* blk = sw + r * WLD + shift[r] + Fmt<T>::BYTES * j;
            s_dw[j * BN + r] = ld_half(blk);
            if (T == W_Q4_1) s_mw[j * BN + r] = ld_half(blk + 2);
        }
    }
}

// f(i, nt, e) for every element of a warp's 2 x NT mma tiles (fully
// unrolled, so arrays indexed by them stay in registers).
template <int NT, class F>
__device__ __forceinline__ void gq_each(F f) {
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++) f(i, nt, e);
}

// A warp's 2 x NT tiles of accumulators to zero.
template <int NT>
__device__ __forceinline__ void gq_zero(float a[2][NT][4]) {
    gq_each<NT>([&](int i, int nt, int e) { a[i][nt][e] = 0.0f; });
}

// Where a warp's 2 x NT mma tiles of outputs lie (the accumulator layout):
// element e of tile (i, nt) is output row r0 + 16 i + g (+ 8 for e >= 2),
// column c0 + 8 nt + 2 t + (e & 1). Shared with gemm_bf16.cu.
struct GqOut {
    int r0, c0, g, t, M, N;
    __device__ __forceinline__ int row(int i, int e) const { return r0 + i * 16 + g + (e >= 2 ? 8 : 0); }
    __device__ __forceinline__ int col(int nt, int e) const { return c0 + nt * 8 + 2 * t + (e & 1); }
};

// A k tile's fresh sums ts: kept as tile kt of `tiles` (split over k; added
// in k order by gemm_sum_tiles) or added to the running sums acc, the same
// f32 adds either way.
template <int NT>
__device__ __forceinline__ void gq_tile_sum(const GqOut& o, float acc[2][NT][4],
                                            const float ts[2][NT][4], float* tiles, int kt) {
    gq_each<NT>([&](int i, int nt, int e) {
        if (tiles) {
            const int m = o.row(i, e), n = o.col(nt, e);
            if (m < o.M && n < o.N) tiles[((u64)kt * o.M + m) * o.N + n] = ts[i][nt][e];
        } else {
            acc[i][nt][e] = __fadd_rn(acc[i][nt][e], ts[i][nt][e]);
        }
    });
}

// The warp's sums (+ bias) into out, or added to it.
template <int NT>
__device__ __forceinline__ void gq_store(const GqOut& o, const float acc[2][NT][4], float* out,
                                         const float* bias, int ldo, int add) {
    gq_each<NT>([&](int i, int nt, int e) {
        const int m = o.row(i, e), n = o.col(nt, e);
        if (m < o.M && n < o.N) {
            float v = acc[i][nt][e];
            if (bias) v += bias[n];
            float* p = out + (u64)m * ldo + n;
            *p = add ? *p + v : v;
        }
    });
}

template <int T, int BN>
__device__ __forceinline__ void gemmq_body(const u8* w, u64 row_bytes, u64 w_len, const i8* xq,
                                           const float* xd, const float* xs, float* out,
                                           const float* bias, int M, int N, int K, int ldo,
                                           int add, int kt_per, float* tiles) {
    constexpr int NT = BN / 32;
    constexpr int CH = GqFmt<T>::CH, WLD = CH * 16;
    constexpr bool OFFSET = GqFmt<T>::OFFSET, G16 = GqFmt<T>::G == 16;
    typedef GqSmem<T, BN> L;
    extern __shared__ __align__(16) u8 gq_smem[];
    u8* s_x = gq_smem + L::X;
    u8* s_w = gq_smem + L::W;
    float* s_xd = (float*)(gq_smem + L::XD);
    float* s_xs = (float*)(gq_smem + L::XS);
    float* s_dw = (float*)(gq_smem + L::DW);
    float* s_mw = (float*)(gq_smem + L::MW);
    int* s_shift = (int*)(gq_smem + L::SHIFT);

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * (BN / 4);
    const int m0 = blockIdx.x * 64, n0 = blockIdx.y * BN;

    // Weights are never written by a kernel, but x, the scratch and out
    // come from earlier kernels.
    pdl_wait_then_trigger();

    const int n_kt = (K + GQ_KT - 1) / GQ_KT;
    const int kt_begin = blockIdx.z * kt_per;
    const int kt_end = min(n_kt, kt_begin + kt_per);
    const int kg = K / 32;

    // Copies k tile kt into buffer buf: x's codes and scales (rows past M
    // read row M - 1; their outputs are not stored) and each weight row's
    // raw span (rows past N read row N - 1).
    auto issue = [&](int kt, int buf) {
        const int k0 = kt * GQ_KT;
        const int kv = min(GQ_KT, K - k0);
        u8* sx = s_x + buf * 64 * GQ_XLD;
        for (int c = tid; c < 64 * 16; c += GQ_THREADS) {
            const int r = c / 16, ch = c % 16;
            if (ch * 16 < kv) {
                const u64 row = (u64)min(m0 + r, M - 1);
                cp_async16z(smem_addr(sx + r * GQ_XLD + ch * 16), xq + row * K + k0 + ch * 16, 16);
            }
        }
        for (int c = tid; c < 8 * 64; c += GQ_THREADS) {
            const int j = c / 64, r = c % 64;
            if (j * 32 < kv) {
                const u64 o = (u64)min(m0 + r, M - 1) * kg + k0 / 32 + j;
                cp_async4(smem_addr(s_xd + (buf * 8 + j) * 64 + r), xd + o);
                if (OFFSET) cp_async4(smem_addr(s_xs + (buf * 8 + j) * 64 + r), xs + o);
            }
        }
        const u64 first = (u64)(k0 / Fmt<T>::QK) * Fmt<T>::BYTES;
        const u64 nbytes = (u64)((kv + Fmt<T>::QK - 1) / Fmt<T>::QK) * Fmt<T>::BYTES;
        u8* sw = s_w + buf * BN * WLD;
        for (int c = tid; c < BN * CH; c += GQ_THREADS) {
            const int r = c / CH, ch = c % CH;
            const u64 lo = (u64)min(n0 + r, N - 1) * row_bytes + first;
            const u64 alo = lo & ~(u64)15;
            if (ch == 0) s_shift[buf * BN + r] = (int)(lo - alo);
            const u64 src = alo + 16 * (u64)ch;
            if (src < lo + nbytes && src < w_len) {
                const u32 size = (u32)min((u64)16, w_len - src);
                cp_async16z(smem_addr(sw + r * WLD + ch * 16), w + src, size);
            }
        }
        cp_async_commit();
    };

    float acc[2][NT][4];
    gq_zero<NT>(acc);
    const GqOut o{m0 + wm, n0 + wn, g, t, M, N};

    // ldmatrix row addresses of this lane's A fragments (gemm_codes.cu's
    // layout: the 32 bytes of an int8 k32 step are a bf16 k16 step's).
    const u32 a_off = (u32)((wm + lane % 16) * GQ_XLD + (lane / 16) * 16);

    if (kt_begin < kt_end) issue(kt_begin, 0);
    int buf = 0;
    for (int kt = kt_begin; kt < kt_end; kt++, buf ^= 1) {
        cp_async_wait_all();
        __syncthreads();
        // The next tile lands while this one is computed.
        if (kt + 1 < kt_end) issue(kt + 1, buf ^ 1);
        const int ng = min(GQ_KT, K - kt * GQ_KT) / 32;
        const u8* sw = s_w + buf * BN * WLD;
        gq_scales<T, BN>(sw, s_shift + buf * BN, ng, s_dw, s_mw);
        __syncthreads();

        const u32 sxa = smem_addr(s_x + buf * 64 * GQ_XLD) + a_off;
        const float* xdb = s_xd + buf * 8 * 64;
        const float* xsb = s_xs + buf * 8 * 64;
        const u8* wrow[NT];
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int r = wn + 8 * nt + g;
            wrow[nt] = sw + r * WLD + s_shift[buf * BN + r];
        }
        float ts[2][NT][4];
        gq_zero<NT>(ts);

#pragma unroll
        for (int j = 0; j < 8; j++) {
            if (j >= ng) break;
            u32 a[2][4];
#pragma unroll
            for (int i = 0; i < 2; i++) ldmatrix_x4(sxa + (u32)(i * 16 * GQ_XLD + 32 * j), a[i]);
            float dx[2][2], sx[2][2];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int m = wm + 16 * i + g + 8 * h;
                    dx[i][h] = xdb[j * 64 + m];
                    sx[i][h] = OFFSET ? xsb[j * 64 + m] : 0.0f;
                }
#pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                const int nc = wn + 8 * nt + 2 * t;
                if (G16) {
                    const u32 b0 = gq_codes_q6k(wrow[nt], 2 * j, t);
                    const u32 b1 = gq_codes_q6k(wrow[nt], 2 * j + 1, t);
                    const float2 d0 = *(const float2*)(s_dw + (2 * j) * BN + nc);
                    const float2 d1 = *(const float2*)(s_dw + (2 * j + 1) * BN + nc);
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        int p0[4], p1[4];
                        mma_s8_k16(p0, a[i][0], a[i][1], b0);
                        mma_s8_k16(p1, a[i][2], a[i][3], b1);
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float x = dx[i][e >> 1];
                            float v = __fmaf_rn(gq_sum(p0[e]), __fmul_rn(x, (e & 1) ? d0.y : d0.x), ts[i][nt][e]);
                            ts[i][nt][e] = __fmaf_rn(gq_sum(p1[e]), __fmul_rn(x, (e & 1) ? d1.y : d1.x), v);
                        }
                    }
                } else {
                    u32 b[2];
                    gq_codes<T>(wrow[nt], j, t, b);
                    const float2 dw = *(const float2*)(s_dw + j * BN + nc);
                    const float2 mw = OFFSET ? *(const float2*)(s_mw + j * BN + nc) : make_float2(0.0f, 0.0f);
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        int p[4];
                        mma_s8_k32(p, a[i], b);
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float dwe = (e & 1) ? dw.y : dw.x;
                            float v = __fmaf_rn(gq_sum(p[e]), __fmul_rn(dx[i][e >> 1], dwe), ts[i][nt][e]);
                            if (OFFSET) v = __fmaf_rn((e & 1) ? mw.y : mw.x, sx[i][e >> 1], v);
                            ts[i][nt][e] = v;
                        }
                    }
                }
            }
        }
        gq_tile_sum<NT>(o, acc, ts, tiles, kt);
    }
    if (tiles) return;
    gq_store<NT>(o, acc, out, bias, ldo, add);
}

// Blocks per SM the compiler plans registers for: two where two blocks'
// shared memory fits an SM (Q4_1, Q4_K: 97 KB each; 128 registers, a few
// spilled), else one. SMELT_GQ_MINB overrides it for every type (A/B runs).
#ifdef SMELT_GQ_MINB
#define GQ_MINB(B) SMELT_GQ_MINB
#else
#define GQ_MINB(B) B
#endif

// gemmq_<type> (128-wide tiles) and gemmq_<type>_n64 (64-wide).
#define SMELT_GEMMQ_KERNEL(NAME, T, MINB)                                                      \
    extern "C" __global__ void __launch_bounds__(GQ_THREADS, GQ_MINB(MINB))                    \
        gemmq_##NAME(const u8* w, u64 row_bytes, u64 w_len, const i8* xq, const float* xd,     \
                     const float* xs, float* out, const float* bias, int M, int N, int K,      \
                     int ldo, int add, int kt_per, float* tiles) {                             \
        gemmq_body<T, 128>(w, row_bytes, w_len, xq, xd, xs, out, bias, M, N, K, ldo, add,      \
                           kt_per, tiles);                                                     \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(GQ_THREADS, GQ_MINB(MINB))                    \
        gemmq_##NAME##_n64(const u8* w, u64 row_bytes, u64 w_len, const i8* xq,                \
                           const float* xd, const float* xs, float* out, const float* bias,    \
                           int M, int N, int K, int ldo, int add, int kt_per, float* tiles) {  \
        gemmq_body<T, 64>(w, row_bytes, w_len, xq, xd, xs, out, bias, M, N, K, ldo, add,       \
                          kt_per, tiles);                                                      \
    }

SMELT_GEMMQ_KERNEL(q4_1, W_Q4_1, 2)
SMELT_GEMMQ_KERNEL(q8_0, W_Q8_0, 1)
SMELT_GEMMQ_KERNEL(q4_k, W_Q4_K, 2)
SMELT_GEMMQ_KERNEL(q6_k, W_Q6_K, 1)
