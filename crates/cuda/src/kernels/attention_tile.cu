// Bulk rows' attention on the tensor cores (session 11): one block of 4
// warps per (head, tile of up to 64 rows of one sequence), a flash-attention
// loop over the keys in blocks of 64 (f16 K/V cache only, head dimension 64
// or 128). Rows whose logits the step wants keep attention.cu's kernel (see
// src/attention.rs); like the bulk GEMM, this path is a property of the row.
//
// Precision: q (times the softmax scale) and the probabilities are split
// into f16 hi + lo (22 significant bits), each product taken twice (hi and
// lo against the exact f16 K / V) with f32 accumulation; the softmax runs in
// f32 (online: running max and sum per row, rescaled per key block).
//
// Batch invariance: a row's scores are its own q against each key; its key
// blocks run from key 0 in blocks of 64 in order whatever tile it lies in;
// a block past its position (the tile runs to its last row's) is masked
// whole, which leaves the row's max, sum and output bit for bit as they
// were (scale 1, terms 0). So a row's result does not depend on the rows
// beside it.

#define AT_ROWS 64
#define AT_KEYS 64

// d = a * b + c for one m16n8k16 tile (f16 inputs, f32 accumulators).
__device__ __forceinline__ void mma_f16(float d[4], const u32 a[4], const u32 b[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void ldmatrix_x4_trans(u32 addr, u32 r[4]) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// (a, b) as f16 hi and lo pairs (a in the low half).
__device__ __forceinline__ void split_f16x2(float a, float b, u32& hi, u32& lo) {
    u32 h, l;
    asm("{ cvt.rn.f16x2.f32 %0, %1, %2; }" : "=r"(h) : "f"(b), "f"(a));
    const float ra = a - half_to_float((u16)(h & 0xFFFF));
    const float rb = b - half_to_float((u16)(h >> 16));
    asm("{ cvt.rn.f16x2.f32 %0, %1, %2; }" : "=r"(l) : "f"(rb), "f"(ra));
    hi = h;
    lo = l;
}

// 16 bytes global -> shared, or zeros when !valid.
__device__ __forceinline__ void cp_async16_or_zero(u32 dst, const void* src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src),
                 "r"(valid ? 16 : 0));
}

// tiles: per tile, its first row and its row count (rows r0 .. r0 + n of q,
// positions, table_start and out).
template <int D>
__device__ __forceinline__ void attention_tile_body(
    const float* q, int q_cols, const u16* kc, const u16* vc, u64 layer_off, int row_width,
    const u32* positions, const u32* table_start, const u32* tables, int block_size, int n_heads,
    int n_kv_heads, float scale, int window, float* out, int out_cols, const u32* tiles) {
    // Rows of D halves plus 8 of padding: ldmatrix rows on distinct banks.
    constexpr int LD = D + 8;
    constexpr int KS = D / 16;  // k steps of q.k
    constexpr int NT = D / 8;   // n tiles of the output
    extern __shared__ __align__(16) u16 at_smem[];
    u16* s_qh = at_smem;
    u16* s_ql = s_qh + AT_ROWS * LD;
    u16* s_k = s_ql + AT_ROWS * LD;
    u16* s_v = s_k + AT_KEYS * LD;
    __shared__ int s_slot[AT_KEYS];

    const int h = blockIdx.x, tile = blockIdx.y;
    const int r0 = (int)tiles[2 * tile], n_rows = (int)tiles[2 * tile + 1];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int kvh = h / (n_heads / n_kv_heads);
    const u32* table = tables + table_start[r0];
    int last_pos = 0;
    for (int i = 0; i < n_rows; i++) last_pos = max(last_pos, (int)positions[r0 + i]);
    // This lane's two rows (g and g + 8 of the warp's 16): position, or -1.
    int rp[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int r = warp * 16 + g + 8 * e;
        rp[e] = r < n_rows ? (int)positions[r0 + r] : -1;
    }
    pdl_wait_then_trigger();

    // q (times the scale) as f16 hi / lo rows; rows past the tile are zeros.
    for (int i = tid; i < AT_ROWS * D / 2; i += blockDim.x) {
        const int r = i / (D / 2), c = 2 * (i % (D / 2));
        float a = 0.0f, b = 0.0f;
        if (r < n_rows) {
            const float* qr = q + (u64)(r0 + r) * q_cols + h * D + c;
            a = qr[0] * scale;
            b = qr[1] * scale;
        }
        u32 hi, lo;
        split_f16x2(a, b, hi, lo);
        *(u32*)(s_qh + r * LD + c) = hi;
        *(u32*)(s_ql + r * LD + c) = lo;
    }

    float o[NT][4];
#pragma unroll
    for (int j = 0; j < NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) o[j][e] = 0.0f;
    float m_run[2] = {NEG_INF, NEG_INF}, l_run[2] = {0.0f, 0.0f};

    const u32 qh_base = smem_addr(s_qh), ql_base = smem_addr(s_ql);
    const u32 k_base = smem_addr(s_k), v_base = smem_addr(s_v);
    // ldmatrix lane rows: A (q) rows warp*16 + lane % 16, k half lane / 16;
    // B (K) rows (key) (lane / 16) * 8 + lane % 8, k half (lane / 8) % 2;
    // B (V, transposed) rows (key) lane % 16, d half lane / 16.
    const u32 a_off = (u32)(((warp * 16 + lane % 16) * LD + (lane / 16) * 8) * 2);
    const u32 bk_off = (u32)((((lane / 16) * 8 + lane % 8) * LD + ((lane / 8) % 2) * 8) * 2);
    const u32 bv_off = (u32)(((lane % 16) * LD + (lane / 16) * 8) * 2);

    const int n_blocks = last_pos / AT_KEYS + 1;
    for (int kb = 0; kb < n_blocks; kb++) {
        const int k0 = kb * AT_KEYS;
        __syncthreads();  // the previous block's K / V reads are done
        for (int i = tid; i < AT_KEYS; i += blockDim.x) {
            const int p = k0 + i;
            s_slot[i] = p <= last_pos ? (int)(table[p / block_size] * block_size + p % block_size) : -1;
        }
        __syncthreads();
        for (int i = tid; i < AT_KEYS * (D / 8); i += blockDim.x) {
            const int key = i / (D / 8), c = 8 * (i % (D / 8));
            const int slot = s_slot[key];
            const u64 off = layer_off + (u64)max(slot, 0) * row_width + (u64)kvh * D + c;
            cp_async16_or_zero(smem_addr(s_k + key * LD + c), kc + off, slot >= 0);
            cp_async16_or_zero(smem_addr(s_v + key * LD + c), vc + off, slot >= 0);
        }
        asm volatile("cp.async.commit_group;");
        asm volatile("cp.async.wait_all;" ::: "memory");
        __syncthreads();

        // Scores of the warp's 16 rows against the 64 keys.
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) s[j][e] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            u32 ah[4], al[4];
            ldmatrix_x4(qh_base + a_off + ks * 32, ah);
            ldmatrix_x4(ql_base + a_off + ks * 32, al);
#pragma unroll
            for (int j = 0; j < 8; j += 2) {
                u32 b[4];
                ldmatrix_x4(k_base + bk_off + (u32)(j * 8 * LD * 2) + ks * 32, b);
                const u32 b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                mma_f16(s[j], al, b0);
                mma_f16(s[j], ah, b0);
                mma_f16(s[j + 1], al, b1);
                mma_f16(s[j + 1], ah, b1);
            }
        }
        // Mask, then the online softmax per row (the quad of lanes holding
        // a row shares its max).
        float alpha[2];
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int first = window > 0 ? rp[e] - window + 1 : 0;
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    const int kp = k0 + j * 8 + 2 * t + c;
                    float& v = s[j][2 * e + c];
                    if (kp > rp[e] || kp < first) v = NEG_INF;
                    mx = fmaxf(mx, v);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_run[e], mx);
            // No key of the row yet (-inf): nothing to scale or add.
            alpha[e] = m_new == NEG_INF ? 1.0f : expf(m_run[e] - m_new);
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int c = 0; c < 2; c++) {
                    float& v = s[j][2 * e + c];
                    v = m_new == NEG_INF ? 0.0f : expf(v - m_new);
                    sum += v;
                }
            l_run[e] = l_run[e] * alpha[e] + sum;
            m_run[e] = m_new;
        }
#pragma unroll
        for (int j = 0; j < NT; j++) {
            o[j][0] *= alpha[0];
            o[j][1] *= alpha[0];
            o[j][2] *= alpha[1];
            o[j][3] *= alpha[1];
        }
        // o += p . V, p as f16 hi / lo A fragments (the score tiles' layout).
#pragma unroll
        for (int kk = 0; kk < AT_KEYS / 16; kk++) {
            u32 ph[4], pl[4];
            split_f16x2(s[2 * kk][0], s[2 * kk][1], ph[0], pl[0]);
            split_f16x2(s[2 * kk][2], s[2 * kk][3], ph[1], pl[1]);
            split_f16x2(s[2 * kk + 1][0], s[2 * kk + 1][1], ph[2], pl[2]);
            split_f16x2(s[2 * kk + 1][2], s[2 * kk + 1][3], ph[3], pl[3]);
#pragma unroll
            for (int j = 0; j < NT; j += 2) {
                u32 b[4];
                ldmatrix_x4_trans(v_base + bv_off + (u32)(kk * 16 * LD * 2) + (u32)(j * 8 * 2), b);
                const u32 b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                mma_f16(o[j], pl, b0);
                mma_f16(o[j], ph, b0);
                mma_f16(o[j + 1], pl, b1);
                mma_f16(o[j + 1], ph, b1);
            }
        }
    }

    // The row sums over the quad, then out = o / l.
#pragma unroll
    for (int e = 0; e < 2; e++) {
        l_run[e] += __shfl_xor_sync(0xffffffffu, l_run[e], 1);
        l_run[e] += __shfl_xor_sync(0xffffffffu, l_run[e], 2);
    }
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int r = warp * 16 + g + 8 * e;
        if (r >= n_rows) continue;
        const float inv = 1.0f / l_run[e];
        float* orow = out + (u64)(r0 + r) * out_cols + h * D;
#pragma unroll
        for (int j = 0; j < NT; j++) {
            *(float2*)(orow + j * 8 + 2 * t) = make_float2(o[j][2 * e] * inv, o[j][2 * e + 1] * inv);
        }
    }
}

#define SMELT_ATTENTION_TILE(D)                                                                   \
    extern "C" __global__ void __launch_bounds__(128) attention_tile_f16_##D(                     \
        const float* q, int q_cols, const u16* kc, const u16* vc, u64 layer_off, int row_width,   \
        const u32* positions, const u32* table_start, const u32* tables, int block_size,          \
        int n_heads, int n_kv_heads, float scale, int window, float* out, int out_cols,           \
        const u32* tiles) {                                                                       \
        attention_tile_body<D>(q, q_cols, kc, vc, layer_off, row_width, positions, table_start,   \
                               tables, block_size, n_heads, n_kv_heads, scale, window, out,       \
                               out_cols, tiles);                                                  \
    }

SMELT_ATTENTION_TILE(64)
SMELT_ATTENTION_TILE(128)
