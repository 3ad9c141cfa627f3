// Bulk-row GEMM on the weights' exact codes (session 11): out[m][n] (+)=
// sum_k x[m][k] * W[n][k] (+ bias[n]) like gemm.cu, for every weight type
// whose values are d * code + m per group of 16 or 32 with a small integer
// code (every quantized type) or exact in bfloat16 (BF16).
//
// Why: gemm.cu dequantizes each weight to f32, splits it into two bfloat16s
// and takes three tensor-core products per product; here the weight's code
// is exact in one bfloat16, so a product is two (lo_x * code + hi_x *
// code), and the group's scale and offset are applied once per group to the
// f32 partial sums: sum_k x w = d * sum_k x code + m * sum_k x. The input is
// split into bf16 hi and lo once per product (bulk_split_x, with the f32
// sum of every 16 values) instead of once per block column.
//
// Precision: the codes are exact; x is held to 16 significant bits as in
// gemm.cu; the error is relative to sum_k |d code x| + |m x| (for types with
// an offset m, up to a few times sum_k |w x|).
//
// Batch invariance: as gemm.cu. An output's sum runs over the k tiles in
// order; a tile's sum is its groups' terms in order, each group's partial
// from the same two mma steps, whatever M, the tile width or the row's
// place; split over k, the tile sums are kept and added in k order by
// gemm_sum_tiles, the same adds as one block makes.

// x rows (M rows of K f32, K a multiple of 32) into bf16 hi / lo words (2
// values a word, as gemm.cu's split_bf16x2) and the f32 sum of every 16
// values (in order). One thread per 8 values.
extern "C" __global__ void bulk_split_x(const float* x, int M, int K, u32* xh, u32* xl,
                                        float* sx) {
    pdl_wait_then_trigger();
    const u64 n_chunks = (u64)M * K / 8;
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    // Pairs of chunks are a group of 16: both lanes of a pair run the
    // shuffle, so no lane returns before it (n_chunks is even).
    const u64 c = i < n_chunks ? i : n_chunks - 1;
    const float4 a = *(const float4*)(x + c * 8);
    const float4 b = *(const float4*)(x + c * 8 + 4);
    const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; j++) s += v[j];
    const float o = __shfl_xor_sync(0xffffffffu, s, 1);
    if (i >= n_chunks) return;
    store_split8(v, xh + c * 4, xl + c * 4);
    if ((c & 1) == 0) sx[c / 2] = s + o;
}

// Two codes as a bf16 pair (a low, b high); exact for |code| <= 256.
__device__ __forceinline__ u32 bf16_pair(float a, float b) {
    u32 h;
    asm("{ cvt.rn.bf16x2.f32 %0, %1, %2; }" : "=r"(h) : "f"(b), "f"(a));
    return h;
}

__device__ __forceinline__ void pack_codes(const float q[8], u32 out[4]) {
#pragma unroll
    for (int i = 0; i < 4; i++) out[i] = bf16_pair(q[2 * i], q[2 * i + 1]);
}

// Chunk c (values 8c .. 8c + 8) of a weight row as exact bf16 codes, and
// its group's d and m: value = d * code + m (the reference's values up to
// the order of f32 rounding). The formulas follow dequant8 (quant.cu).
template <int T>
__device__ __forceinline__ void codes8(const u8* row, int c, u32 out[4], float& d, float& m) {
    const int e0 = c * 8;
    m = 0.0f;
    if (T == W_BF16) {
        const uint4 v = *(const uint4*)(row + (u64)e0 * 2);
        out[0] = v.x; out[1] = v.y; out[2] = v.z; out[3] = v.w;
        d = 1.0f;
        return;
    }
    const int QK = Fmt<T>::QK;
    const u8* blk = row + (size_t)(e0 / QK) * Fmt<T>::BYTES;
    const int e = e0 % QK;
    int q[8];
    float f[8];
    if (T == W_Q4_0) {
        d = ld_half(blk);
        nibbles8<2>(blk + 2, e, q);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f(q[i]) - 8.0f;
    } else if (T == W_Q4_1) {
        d = ld_half(blk);
        m = ld_half(blk + 2);
        nibbles8<4>(blk + 4, e, q);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f(q[i]);
    } else if (T == W_Q5_0) {
        d = ld_half(blk);
        const u32 qh = ld_u32_a2(blk + 2);
        nibbles8<2>(blk + 6, e, q);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f(q[i] | (((qh >> (e + i)) & 1) << 4)) - 16.0f;
    } else if (T == W_Q5_1) {
        d = ld_half(blk);
        m = ld_half(blk + 2);
        const u32 qh = ld_u32_a2(blk + 4);
        nibbles8<8>(blk + 8, e, q);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f(q[i] | (((qh >> (e + i)) & 1) << 4));
    } else if (T == W_Q8_0) {
        d = ld_half(blk);
        u32 w[2];
        load8<2>(blk + 2 + e, w);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f(byte_at(w, i) ^ 0x80) - 128.0f;
    } else if (T == W_Q2_K) {
        const u8 sm = blk[e / 16];
        d = ld_half(blk + 80) * u2f(sm & 0x0F);
        m = -(ld_half(blk + 82) * u2f(sm >> 4));
        u32 w[2];
        load8<4>(blk + 16 + 32 * (e / 128) + (e % 32), w);
        const int shift = 2 * ((e % 128) / 32);
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f((byte_at(w, i) >> shift) & 3);
    } else if (T == W_Q3_K) {
        const int g = e / 16;
        const u8* s = blk + 96;
        const int lo = (s[g % 8] >> (4 * (g / 8))) & 0x0F;
        const int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        d = ld_half(blk + 108) * (u2f(lo | (hi << 4)) - 32.0f);
        u32 wq[2], wh[2];
        load8<2>(blk + 32 + 32 * (e / 128) + (e % 32), wq);
        load8<2>(blk + (e % 32), wh);
        const int shift = 2 * ((e % 128) / 32);
        const int hbit = e / 32;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int low = (byte_at(wq, i) >> shift) & 3;
            const int h = (byte_at(wh, i) >> hbit) & 1;
            f[i] = u2f(low | (h << 2)) - 4.0f;
        }
    } else if (T == W_Q4_K || T == W_Q5_K) {
        int sc, mn;
        scale_min_k4(blk + 4, e / 32, &sc, &mn);
        d = ld_half(blk) * u2f(sc);
        m = -(ld_half(blk + 2) * u2f(mn));
        const int qoff = T == W_Q4_K ? 16 : 48;
        u32 wq[2];
        load8<8>(blk + qoff + 32 * (e / 64) + (e % 32), wq);
        const int shift = ((e / 32) & 1) * 4;
        if (T == W_Q4_K) {
#pragma unroll
            for (int i = 0; i < 8; i++) f[i] = u2f((byte_at(wq, i) >> shift) & 0x0F);
        } else {
            u32 wh[2];
            load8<8>(blk + 16 + (e % 32), wh);
            const int hbit = e / 32;
#pragma unroll
            for (int i = 0; i < 8; i++)
                f[i] = u2f(((byte_at(wq, i) >> shift) & 0x0F) | (((byte_at(wh, i) >> hbit) & 1) << 4));
        }
    } else if (T == W_Q6_K) {
        d = ld_half(blk + 208) * (u2f(blk[192 + e / 16] ^ 0x80) - 128.0f);
        const int h = e / 128, w = e % 128;
        u32 wl[2], wh[2];
        load8<2>(blk + 64 * h + (w % 64), wl);
        load8<2>(blk + 128 + 32 * h + (w % 32), wh);
        const int lshift = w >= 64 ? 4 : 0;
        const int hshift = 2 * (w / 32);
#pragma unroll
        for (int i = 0; i < 8; i++)
            f[i] = u2f(((byte_at(wl, i) >> lshift) & 0x0F) | (((byte_at(wh, i) >> hshift) & 3) << 4)) - 32.0f;
    }
    pack_codes(f, out);
}

// Asynchronous copies global -> shared of 16 / 8 bytes (both addresses
// aligned so), waited for by cp_async_wait_all.
__device__ __forceinline__ void cp_async16(u32 dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async8(u32 dst, const void* src) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

// A chunk's raw bytes, loaded one k tile ahead and converted (codes8's
// values, bit for bit) only when the tile is stored, so the loads' latency
// hides behind the current tile's products. Q4_K, Q6_K, Q4_1, Q8_0 and
// BF16 load raw words; the other types convert at load time (codes8).
struct RawChunk {
    u32 w[6];
};

template <int T>
__device__ __forceinline__ void raw_load(const u8* row, int c, RawChunk& r) {
    const int e0 = c * 8;
    if (T == W_BF16) {
        const uint4 v = *(const uint4*)(row + (u64)e0 * 2);
        r.w[0] = v.x; r.w[1] = v.y; r.w[2] = v.z; r.w[3] = v.w;
        return;
    }
    const int QK = Fmt<T>::QK;
    const u8* blk = row + (size_t)(e0 / QK) * Fmt<T>::BYTES;
    const int e = e0 % QK;
    if (T == W_Q4_K) {
        // d, dmin, 12 scale bytes; the 8 bytes of the chunk's nibbles.
        const uint4 h = *(const uint4*)blk;
        const uint2 q = *(const uint2*)(blk + 16 + 32 * (e / 64) + (e % 32));
        r.w[0] = h.x; r.w[1] = h.y; r.w[2] = h.z; r.w[3] = h.w; r.w[4] = q.x; r.w[5] = q.y;
    } else if (T == W_Q6_K) {
        const int h = e / 128, w = e % 128;
        u32 l[2], hb[2];
        load8<2>(blk + 64 * h + (w % 64), l);
        load8<2>(blk + 128 + 32 * h + (w % 32), hb);
        r.w[0] = l[0]; r.w[1] = l[1]; r.w[2] = hb[0]; r.w[3] = hb[1];
        r.w[4] = (u32)blk[192 + e / 16];
        r.w[5] = (u32)ld_u16(blk + 208);
    } else if (T == W_Q4_1) {
        r.w[0] = *(const u32*)blk;
        load8<4>(blk + 4 + (e & 15), r.w + 1);
    } else if (T == W_Q8_0) {
        r.w[0] = (u32)ld_u16(blk);
        load8<2>(blk + 2 + e, r.w + 1);
    } else {
        float d, m;
        codes8<T>(row, c, r.w, d, m);
        r.w[4] = __float_as_uint(d);
        r.w[5] = __float_as_uint(m);
    }
}

template <int T>
__device__ __forceinline__ void raw_convert(const RawChunk& r, int c, u32 out[4], float& d, float& m) {
    const int e = (c * 8) % Fmt<T>::QK;
    m = 0.0f;
    float f[8];
    if (T == W_BF16) {
        out[0] = r.w[0]; out[1] = r.w[1]; out[2] = r.w[2]; out[3] = r.w[3];
        d = 1.0f;
        return;
    } else if (T == W_Q4_K) {
        int sc, mn;
        const int g = e / 32;
        const u32 s0 = r.w[1], s1 = r.w[2], s2 = r.w[3];
        // scale_min_k4 on the 12 bytes s0..s2 (bytes 4..15 of the block),
        // selected from registers.
        auto byte = [&](int i) {
            const u32 wd = i < 4 ? s0 : (i < 8 ? s1 : s2);
            return (int)((wd >> (8 * (i & 3))) & 0xFF);
        };
        if (g < 4) {
            sc = byte(g) & 63;
            mn = byte(g + 4) & 63;
        } else {
            sc = (byte(g + 4) & 0x0F) | ((byte(g - 4) >> 6) << 4);
            mn = (byte(g + 4) >> 4) | ((byte(g) >> 6) << 4);
        }
        d = half_to_float((u16)(r.w[0] & 0xFFFF)) * u2f(sc);
        m = -(half_to_float((u16)(r.w[0] >> 16)) * u2f(mn));
        const u32 wq[2] = {r.w[4], r.w[5]};
        const int shift = (g & 1) * 4;
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f((byte_at(wq, i) >> shift) & 0x0F);
    } else if (T == W_Q6_K) {
        d = half_to_float((u16)r.w[5]) * (u2f(r.w[4] ^ 0x80) - 128.0f);
        const int w = e % 128;
        const u32 wl[2] = {r.w[0], r.w[1]}, wh[2] = {r.w[2], r.w[3]};
        const int lshift = w >= 64 ? 4 : 0;
        const int hshift = 2 * (w / 32);
#pragma unroll
        for (int i = 0; i < 8; i++)
            f[i] = u2f(((byte_at(wl, i) >> lshift) & 0x0F) | (((byte_at(wh, i) >> hshift) & 3) << 4)) - 32.0f;
    } else if (T == W_Q4_1) {
        d = half_to_float((u16)(r.w[0] & 0xFFFF));
        m = half_to_float((u16)(r.w[0] >> 16));
        const u32 wq[2] = {r.w[1], r.w[2]};
        const int shift = e >= 16 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f((byte_at(wq, i) >> shift) & 0x0F);
    } else if (T == W_Q8_0) {
        d = half_to_float((u16)r.w[0]);
        const u32 wq[2] = {r.w[1], r.w[2]};
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = u2f(byte_at(wq, i) ^ 0x80) - 128.0f;
    } else {
        out[0] = r.w[0]; out[1] = r.w[1]; out[2] = r.w[2]; out[3] = r.w[3];
        d = __uint_as_float(r.w[4]);
        m = __uint_as_float(r.w[5]);
        return;
    }
    pack_codes(f, out);
}

// Groups of 16 values (one scale per mma k step) or of 32 (one per tile).
template <int T> struct CodeGroups {
    static const bool G16 = T == W_Q2_K || T == W_Q3_K || T == W_Q6_K;
    static const bool OFFSET = T == W_Q4_1 || T == W_Q5_1 || T == W_Q2_K || T == W_Q4_K || T == W_Q5_K;
    static const bool SCALED = T != W_BF16;
};

// d = a * b for one m16n8k16 tile, the accumulator starting at zero.
__device__ __forceinline__ void mma_bf16_zero(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
}

// The block layout is gemm.cu's (GB_M x BN outputs, 8 warps of 32 x BN/4,
// k tiles of GB_K, rows of GB_LDW words in shared memory). xh / xl / sx
// come from bulk_split_x (rows K values apart).
template <int T, int BN>
__device__ __forceinline__ void gemmc_body(const u8* w, u64 row_bytes, const u32* xh,
                                           const u32* xl, const float* sx, float* out,
                                           const float* bias, int M, int N, int K, int ldo,
                                           int add, int kt_per, float* tiles) {
    constexpr int NT = BN / 32;
    constexpr bool G16 = CodeGroups<T>::G16, OFFSET = CodeGroups<T>::OFFSET;
    constexpr bool SCALED = CodeGroups<T>::SCALED;
    // x tiles (hi, lo, group sums) double-buffered: the next tile's copy
    // (cp.async) runs during this tile's products.
    __shared__ __align__(16) u32 s_xh[2][GB_M * GB_LDW];
    __shared__ __align__(16) u32 s_xl[2][GB_M * GB_LDW];
    __shared__ __align__(16) float s_sx[2][GB_M * 2];
    __shared__ __align__(16) u32 s_w[BN * GB_LDW];
    // Per weight row and 16-value group of the tile: (d, m).
    __shared__ __align__(16) float2 s_dm[BN * 2];

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 32, wn = (warp % 4) * (BN / 4);
    const int m0 = blockIdx.x * GB_M, n0 = blockIdx.y * BN;

    pdl_wait_then_trigger();

    float acc[2][NT][4];
#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    // This thread's share of a k tile: chunk xc (8 values) of x row xr (hi
    // and lo copied asynchronously; chunk 0 also copies the row's two
    // 16-value sums) and of weight rows xr + 64 i (raw words, converted
    // when stored; even chunks store their 16-value group's (d, m)).
    // Rows past M read row M - 1 (their outputs are not stored).
    const int xr = tid / 4, xc = tid % 4;
    const u64 xrow = (u64)min(m0 + xr, M - 1);
    RawChunk raw[BN / 64];
    auto copy_x = [&](int k0, int buf) {
        const u64 xo = xrow * (u64)(K / 2) + (u64)(k0 / 2 + xc * 4);
        cp_async16(smem_addr(&s_xh[buf][xr * GB_LDW + xc * 4]), xh + xo);
        cp_async16(smem_addr(&s_xl[buf][xr * GB_LDW + xc * 4]), xl + xo);
        if (SCALED && xc == 0) cp_async8(smem_addr(&s_sx[buf][xr * 2]), sx + xrow * (u64)(K / 16) + k0 / 16);
        cp_async_commit();
    };
    // Rows past N read row N - 1 (their outputs are not stored).
    auto fetch = [&](int k0) {
#pragma unroll
        for (int i = 0; i < BN / 64; i++) {
            const int n = min(n0 + xr + 64 * i, N - 1);
            raw_load<T>(w + (u64)n * row_bytes, k0 / 8 + xc, raw[i]);
        }
    };
    const u32 a_off = (u32)(((wm + lane % 16) * GB_LDW + (lane / 16) * 4) * 4);
    const u32 b_off = (u32)(((wn + (lane / 16) * 8 + lane % 8) * GB_LDW + ((lane / 8) % 2) * 4) * 4);
    const u32 sw = smem_addr(s_w);

    const int k_begin = blockIdx.z * kt_per * GB_K;
    const int k_end = min(K, k_begin + kt_per * GB_K);
    copy_x(k_begin, 0);
    fetch(k_begin);
    int buf = 0;
    for (int k0 = k_begin; k0 < k_end; k0 += GB_K, buf ^= 1) {
        const u32 sxh = smem_addr(s_xh[buf]), sxl = smem_addr(s_xl[buf]);
        const float* s_sxb = s_sx[buf];
#pragma unroll
        for (int i = 0; i < BN / 64; i++) {
            const int r = xr + 64 * i;
            u32 wv[4];
            float2 dm;
            raw_convert<T>(raw[i], k0 / 8 + xc, wv, dm.x, dm.y);
            *(uint4*)(s_w + r * GB_LDW + xc * 4) = make_uint4(wv[0], wv[1], wv[2], wv[3]);
            if (SCALED && (xc & 1) == 0) s_dm[r * 2 + xc / 2] = dm;
        }
        cp_async_wait_all();
        __syncthreads();
        // The next tile (the last one again at the end: no branch, so the
        // loads interleave with the mma below).
        copy_x(min(k0 + GB_K, k_end - GB_K), buf ^ 1);
        fetch(min(k0 + GB_K, k_end - GB_K));

        // The current group's partials and (groups of 16) the tile's sums:
        // a tile's sum is added to acc or kept (split over k) whole, as
        // gemm.cu's fresh accumulator.
        float ts[2][NT][4], p[2][NT][4];
#pragma unroll
        for (int kk = 0; kk < GB_K / 2; kk += 8) {  // words: k 0..15, 16..31
            u32 b[NT][2];
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                const u32 o = b_off + (u32)((j * 8 * GB_LDW + kk) * 4);
                u32 r[4];
                ldmatrix_x4(sw + o, r);
                b[j][0] = r[0]; b[j][1] = r[1]; b[j + 1][0] = r[2]; b[j + 1][1] = r[3];
            }
            const bool fresh = G16 || kk == 0;
#pragma unroll
            for (int i = 0; i < 2; i++) {
                // One 16-row tile's fragments at a time (registers).
                u32 ah[4], al[4];
                const u32 o = a_off + (u32)((i * 16 * GB_LDW + kk) * 4);
                ldmatrix_x4(sxh + o, ah);
                ldmatrix_x4(sxl + o, al);
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    if (fresh) mma_bf16_zero(p[i][j], al, b[j]);
                    else mma_bf16(p[i][j], al, b[j]);
                    mma_bf16(p[i][j], ah, b[j]);
                }
            }
            // A group ends here: its terms into the tile's sums.
            if (G16 || kk == 8) {
                const int grp = G16 ? kk / 8 : 0;
                // x sums of this lane's rows (g, g + 8 of each 16-row tile).
                float sxr[2][2];
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int h = 0; h < 2; h++) {
                        const int mr = wm + i * 16 + g + 8 * h;
                        sxr[i][h] = OFFSET ? (G16 ? s_sxb[mr * 2 + grp] : s_sxb[mr * 2] + s_sxb[mr * 2 + 1]) : 0.0f;
                    }
#pragma unroll
                for (int j = 0; j < NT; j++) {
                    float2 dmn[2];
#pragma unroll
                    for (int c = 0; c < 2; c++) {
                        const int nr = wn + j * 8 + 2 * t + c;
                        dmn[c] = SCALED ? s_dm[nr * 2 + grp] : make_float2(1.0f, 0.0f);
                    }
#pragma unroll
                    for (int i = 0; i < 2; i++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            const float2 q = dmn[e & 1];
                            // __fmul_rn: never contracted into acc's add,
                            // so a tile's kept sum (split over k) is the
                            // same value an unsplit block adds.
                            float v = SCALED ? __fmul_rn(q.x, p[i][j][e]) : p[i][j][e];
                            if (OFFSET) v = fmaf(q.y, sxr[i][e >> 1], v);
                            if (G16) {
                                ts[i][j][e] = kk > 0 ? ts[i][j][e] + v : v;
                            } else if (tiles) {
                                // One group a tile: v is the tile's sum.
                                const int m = m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0);
                                const int n = n0 + wn + j * 8 + 2 * t + (e & 1);
                                if (m < M && n < N) tiles[((u64)(k0 / GB_K) * M + m) * N + n] = v;
                            } else {
                                acc[i][j][e] += v;
                            }
                        }
                }
            }
        }
        if (G16 && tiles) {
            const u64 kt = (u64)(k0 / GB_K);
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int m = m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0);
                        const int n = n0 + wn + j * 8 + 2 * t + (e & 1);
                        if (m < M && n < N) tiles[(kt * M + m) * N + n] = ts[i][j][e];
                    }
        } else if (G16) {
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int j = 0; j < NT; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) acc[i][j][e] += ts[i][j][e];
        }
        __syncthreads();
    }
    // (The last iteration copied its own tile again: let it land.)
    cp_async_wait_all();
    if (tiles) return;

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

// gemmc_<type> (128-wide tiles) and gemmc_<type>_n64 (64-wide).
#define SMELT_GEMMC_KERNEL(NAME, T)                                                            \
    extern "C" __global__ void __launch_bounds__(GB_THREADS, 2)                                \
        gemmc_##NAME(const u8* w, u64 row_bytes, const u32* xh, const u32* xl, const float* sx, \
                     float* out, const float* bias, int M, int N, int K, int ldo, int add,      \
                     int kt_per, float* tiles) {                                                \
        gemmc_body<T, 128>(w, row_bytes, xh, xl, sx, out, bias, M, N, K, ldo, add, kt_per,     \
                           tiles);                                                             \
    }                                                                                          \
    extern "C" __global__ void __launch_bounds__(GB_THREADS, 2)                                \
        gemmc_##NAME##_n64(const u8* w, u64 row_bytes, const u32* xh, const u32* xl,           \
                           const float* sx, float* out, const float* bias, int M, int N, int K, \
                           int ldo, int add, int kt_per, float* tiles) {                        \
        gemmc_body<T, 64>(w, row_bytes, xh, xl, sx, out, bias, M, N, K, ldo, add, kt_per,      \
                          tiles);                                                              \
    }

SMELT_GEMMC_KERNEL(bf16, W_BF16)
SMELT_GEMMC_KERNEL(q4_0, W_Q4_0)
SMELT_GEMMC_KERNEL(q4_1, W_Q4_1)
SMELT_GEMMC_KERNEL(q5_0, W_Q5_0)
SMELT_GEMMC_KERNEL(q5_1, W_Q5_1)
SMELT_GEMMC_KERNEL(q8_0, W_Q8_0)
SMELT_GEMMC_KERNEL(q2_k, W_Q2_K)
SMELT_GEMMC_KERNEL(q3_k, W_Q3_K)
SMELT_GEMMC_KERNEL(q4_k, W_Q4_K)
SMELT_GEMMC_KERNEL(q5_k, W_Q5_K)
SMELT_GEMMC_KERNEL(q6_k, W_Q6_K)
