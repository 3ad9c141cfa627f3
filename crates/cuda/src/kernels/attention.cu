// Causal attention of each row over its sequence's paged K/V cache.
//
// One block of ATT_WARPS warps per (head, row). Warp w takes positions
// w, w + ATT_WARPS, ...; for each, the warp forms q.k (lanes split the head's
// values, lane l holding values l, l + 32, ...), then folds the position into
// a running (max, sum, weighted V) with an online softmax. The warps' partial
// results are merged at the end. Heads up to 32 * ATT_MAX_PER_LANE wide.
//
// Cache layout (smelt_backend::KvLayout): layer-major, then slot, then the
// row of all KV heads; slot = block * block_size + offset.

#define ATT_WARPS 4
#define ATT_MAX_PER_LANE 8

template <typename KV>
__device__ __forceinline__ float kv_load(const KV* p);
template <>
__device__ __forceinline__ float kv_load<u16>(const u16* p) { return half_to_float(*p); }
template <>
__device__ __forceinline__ float kv_load<float>(const float* p) { return *p; }

template <typename KV>
__device__ __forceinline__ void attention_body(
    const float* q, int q_cols, const KV* kc, const KV* vc, u64 layer_off, int row_width,
    const u32* positions, const u32* table_start, const u32* tables, int block_size,
    int n_heads, int n_kv_heads, int head_dim, float scale, float* out, int out_cols) {
    __shared__ float sm_m[ATT_WARPS], sm_l[ATT_WARPS];
    __shared__ float sm_acc[ATT_WARPS][32 * ATT_MAX_PER_LANE];

    const int h = blockIdx.x, r = blockIdx.y;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kvh = h / (n_heads / n_kv_heads);
    const int n_pos = (int)positions[r] + 1;
    const u32* table = tables + table_start[r];

    float qv[ATT_MAX_PER_LANE], acc[ATT_MAX_PER_LANE];
    const float* qh = q + (u64)r * q_cols + h * head_dim;
#pragma unroll
    for (int j = 0; j < ATT_MAX_PER_LANE; j++) {
        const int d = lane + 32 * j;
        qv[j] = d < head_dim ? qh[d] : 0.0f;
        acc[j] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int p = warp; p < n_pos; p += ATT_WARPS) {
        const u64 slot = (u64)table[p / block_size] * block_size + p % block_size;
        const u64 at = layer_off + slot * row_width + (u64)kvh * head_dim;
        float s = 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_MAX_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < head_dim) s += qv[j] * kv_load<KV>(kc + at + d);
        }
        s = warp_sum(s) * scale;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new);
        const float e = expf(s - m_new);
        l = l * corr + e;
#pragma unroll
        for (int j = 0; j < ATT_MAX_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < head_dim) acc[j] = acc[j] * corr + e * kv_load<KV>(vc + at + d);
        }
        m = m_new;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int j = 0; j < ATT_MAX_PER_LANE; j++) sm_acc[warp][lane + 32 * j] = acc[j];
    __syncthreads();
    if (warp == 0) {
        float big = NEG_INF;
        for (int w = 0; w < ATT_WARPS; w++) big = fmaxf(big, sm_m[w]);
        float sum = 0.0f, wgt[ATT_WARPS];
        for (int w = 0; w < ATT_WARPS; w++) {
            wgt[w] = sm_l[w] > 0.0f ? expf(sm_m[w] - big) : 0.0f;
            sum += sm_l[w] * wgt[w];
        }
        float* o = out + (u64)r * out_cols + h * head_dim;
#pragma unroll
        for (int j = 0; j < ATT_MAX_PER_LANE; j++) {
            const int d = lane + 32 * j;
            if (d < head_dim) {
                float v = 0.0f;
                for (int w = 0; w < ATT_WARPS; w++) v += sm_acc[w][d] * wgt[w];
                o[d] = v / sum;
            }
        }
    }
}

extern "C" __global__ void attention_f16(
    const float* q, int q_cols, const u16* kc, const u16* vc, u64 layer_off, int row_width,
    const u32* positions, const u32* table_start, const u32* tables, int block_size,
    int n_heads, int n_kv_heads, int head_dim, float scale, float* out, int out_cols) {
    attention_body<u16>(q, q_cols, kc, vc, layer_off, row_width, positions, table_start, tables,
                        block_size, n_heads, n_kv_heads, head_dim, scale, out, out_cols);
}

extern "C" __global__ void attention_f32(
    const float* q, int q_cols, const float* kc, const float* vc, u64 layer_off, int row_width,
    const u32* positions, const u32* table_start, const u32* tables, int block_size,
    int n_heads, int n_kv_heads, int head_dim, float scale, float* out, int out_cols) {
    attention_body<float>(q, q_cols, kc, vc, layer_off, row_width, positions, table_start, tables,
                          block_size, n_heads, n_kv_heads, head_dim, scale, out, out_cols);
}
