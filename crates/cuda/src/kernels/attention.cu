// Causal attention of each row over its sequence's paged K/V cache, split
// over the keys (flash-decoding).
//
// A row at position `pos` attends to keys 0..=pos. They are cut into spans of
// ATT_SPAN keys; one block of ATT_THREADS threads handles one (head, row,
// span): every thread scores one key (q.k over the whole head, K read as
// whole rows), the block takes the span's softmax max and sum, then threads
// split the head's values (and the span's keys) to sum the weighted V rows.
// A row with one span writes its output at once; a row with several writes
// (max, sum, weighted V) per span to scratch, and `attention_merge` combines
// them. The number of spans depends only on the row's own position, so a
// row's result does not depend on the rest of the batch.
//
// Cache layout (smelt_backend::KvLayout): layer-major, then slot, then the
// row of all KV heads; slot = block * block_size + offset.

#define ATT_THREADS 256
#define ATT_SPAN 256

template <typename KV>
__device__ __forceinline__ float kv_load(const KV* p);
template <>
__device__ __forceinline__ float kv_load<u16>(const u16* p) { return half_to_float(*p); }
template <>
__device__ __forceinline__ float kv_load<float>(const float* p) { return *p; }

// Sum (or max) over the block; every thread gets the result. `red` is
// shared scratch of ATT_THREADS / 32 floats.
__device__ __forceinline__ float block_sum(float v, float* red) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = 0.0f;
#pragma unroll
    for (int w = 0; w < ATT_THREADS / 32; w++) t += red[w];
    return t;
}

__device__ __forceinline__ float block_max(float v, float* red) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = NEG_INF;
#pragma unroll
    for (int w = 0; w < ATT_THREADS / 32; w++) t = fmaxf(t, red[w]);
    return t;
}

// Scratch per (row, head, span): max, sum, then head_dim weighted-V values.
template <typename KV>
__device__ __forceinline__ void attention_body(
    const float* q, int q_cols, const KV* kc, const KV* vc, u64 layer_off, int row_width,
    const u32* positions, const u32* table_start, const u32* tables, int block_size,
    int n_heads, int n_kv_heads, int head_dim, float scale, float* out, int out_cols,
    float* scratch, int max_spans) {
    __shared__ float s_q[256];
    __shared__ float s_p[ATT_SPAN];
    __shared__ float s_red[ATT_THREADS / 32];
    __shared__ float s_acc[ATT_THREADS];

    const int h = blockIdx.x, r = blockIdx.y, span = blockIdx.z;
    const int n_pos = (int)positions[r] + 1;
    const int n_spans = (n_pos + ATT_SPAN - 1) / ATT_SPAN;
    if (span >= n_spans) return;
    const int p0 = span * ATT_SPAN;
    const int n = min(ATT_SPAN, n_pos - p0);
    const int kvh = h / (n_heads / n_kv_heads);
    const u32* table = tables + table_start[r];
    const int t = threadIdx.x;

    for (int d = t; d < head_dim; d += ATT_THREADS) s_q[d] = q[(u64)r * q_cols + h * head_dim + d];
    __syncthreads();

    // Scores: one key per thread.
    float s = NEG_INF;
    if (t < n) {
        const int p = p0 + t;
        const u64 slot = (u64)table[p / block_size] * block_size + p % block_size;
        const KV* k = kc + layer_off + slot * row_width + (u64)kvh * head_dim;
        float dot = 0.0f;
        for (int d = 0; d < head_dim; d++) dot += s_q[d] * kv_load<KV>(k + d);
        s = dot * scale;
    }
    const float m = block_max(s, s_red);
    const float e = t < n ? expf(s - m) : 0.0f;
    if (t < ATT_SPAN) s_p[t] = e;
    const float l = block_sum(e, s_red);  // (its barriers also publish s_p)

    // Weighted V: thread (g, d) sums keys g, g + G, ... of value d.
    const int groups = head_dim <= ATT_THREADS ? ATT_THREADS / head_dim : 1;
    const int g = t / head_dim, d0 = t % head_dim;
    float* o = nullptr;
    float norm = 1.0f;
    if (n_spans == 1) {
        o = out + (u64)r * out_cols + h * head_dim;
        norm = 1.0f / l;
    } else {
        float* sc = scratch + (((u64)r * n_heads + h) * max_spans + span) * (head_dim + 2);
        if (t == 0) {
            sc[0] = m;
            sc[1] = l;
        }
        o = sc + 2;
    }
    for (int d = d0; d < head_dim; d += (groups == 1 ? ATT_THREADS : head_dim)) {
        float acc = 0.0f;
        if (g < groups) {
            for (int i = g; i < n; i += groups) {
                const int p = p0 + i;
                const u64 slot = (u64)table[p / block_size] * block_size + p % block_size;
                acc += s_p[i] * kv_load<KV>(vc + layer_off + slot * row_width + (u64)kvh * head_dim + d);
            }
        }
        if (groups == 1) {
            o[d] = acc * norm;
        } else {
            s_acc[t] = acc;
            __syncthreads();
            if (g == 0) {
                float v = 0.0f;
                for (int j = 0; j < groups; j++) v += s_acc[j * head_dim + d];
                o[d] = v * norm;
            }
        }
    }
}

// Combines the spans of rows with more than one: out = sum_s acc_s e^(m_s - M)
// / sum_s l_s e^(m_s - M).
extern "C" __global__ void attention_merge(const u32* positions, int n_heads, int head_dim,
                                           const float* scratch, int max_spans, float* out,
                                           int out_cols) {
    const int h = blockIdx.x, r = blockIdx.y;
    const int n_spans = ((int)positions[r] + ATT_SPAN) / ATT_SPAN;
    if (n_spans == 1) return;
    const float* sc = scratch + ((u64)r * n_heads + h) * max_spans * (head_dim + 2);
    float big = NEG_INF;
    for (int s = 0; s < n_spans; s++) big = fmaxf(big, sc[s * (head_dim + 2)]);
    float sum = 0.0f;
    for (int s = 0; s < n_spans; s++) {
        const float* x = sc + s * (head_dim + 2);
        sum += x[1] * expf(x[0] - big);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < n_spans; s++) {
            const float* x = sc + s * (head_dim + 2);
            v += x[2 + d] * expf(x[0] - big);
        }
        out[(u64)r * out_cols + h * head_dim + d] = v / sum;
    }
}

#define SMELT_ATTENTION(NAME, KV)                                                                 \
    extern "C" __global__ void __launch_bounds__(ATT_THREADS) NAME(                               \
        const float* q, int q_cols, const KV* kc, const KV* vc, u64 layer_off, int row_width,     \
        const u32* positions, const u32* table_start, const u32* tables, int block_size,          \
        int n_heads, int n_kv_heads, int head_dim, float scale, float* out, int out_cols,         \
        float* scratch, int max_spans) {                                                          \
        attention_body<KV>(q, q_cols, kc, vc, layer_off, row_width, positions, table_start,       \
                           tables, block_size, n_heads, n_kv_heads, head_dim, scale, out,         \
                           out_cols, scratch, max_spans);                                         \
    }

SMELT_ATTENTION(attention_f16, u16)
SMELT_ATTENTION(attention_f32, float)
