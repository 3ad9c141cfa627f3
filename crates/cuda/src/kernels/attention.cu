// Causal attention of each row over its sequence's paged K/V cache, split
// over the keys (flash-decoding).
//
// A row at position `pos` attends to keys 0..=pos. They are cut into spans of
// ATT_SPAN keys; one block of ATT_THREADS threads handles one (head, row,
// span): each thread scores ATT_SPAN / ATT_THREADS keys (q.k over the whole
// head, K read 16 bytes at a time), the block takes the span's softmax max
// and sum, then thread (g, c) sums chunk c (8 values) of the weighted V rows
// of keys g, g + G, ..., and the G partial sums of each value are added in a
// fixed order. A row with one span writes its output at once; a row with
// several writes (max, sum, weighted V) per span to scratch, and
// `attention_merge` combines them. The number of spans depends only on the
// row's own position, so a row's result does not depend on the rest of the
// batch. Head dimensions are multiples of 8, at most 256.
//
// Cache layout (smelt_backend::KvLayout): layer-major, then slot, then the
// row of all KV heads; slot = block * block_size + offset.

// Threads per block (a tuning define, read by src/attention.rs too): a
// power of two from 64 to 512.
#ifndef SMELT_ATT_THREADS
#define SMELT_ATT_THREADS 256
#endif
#define ATT_THREADS SMELT_ATT_THREADS
static_assert(ATT_THREADS >= 64 && ATT_THREADS <= 512 && (ATT_THREADS & (ATT_THREADS - 1)) == 0,
              "SMELT_ATT_THREADS: a power of two from 64 to 512");
#define ATT_SPAN 1024
#define ATT_KEYS (ATT_SPAN / ATT_THREADS)
// 8-value chunks of a key a thread loads before it sums them (the q.k loop's
// unroll).
#ifndef SMELT_ATT_UNROLL
#define SMELT_ATT_UNROLL 4
#endif

// 8 consecutive cached values (16-byte aligned for f16, 32 for f32).
__device__ __forceinline__ void kv_load8(const u16* p, float v[8]) {
    const uint4 w = *(const uint4*)p;
    const u32 u[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        v[2 * i] = half_to_float((u16)(u[i] & 0xFFFF));
        v[2 * i + 1] = half_to_float((u16)(u[i] >> 16));
    }
}

__device__ __forceinline__ void kv_load8(const float* p, float v[8]) {
    const float4 a = ((const float4*)p)[0], b = ((const float4*)p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

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
template <typename KV, class Wait>
__device__ __forceinline__ void attention_body(
    Blk blk, Wait wait, const float* q, int q_cols, const KV* kc, const KV* vc, u64 layer_off, int row_width,
    const u32* positions, const u32* table_start, const u32* tables, int block_size,
    int n_heads, int n_kv_heads, int head_dim, float scale, int window, float* out,
    int out_cols, float* scratch, int max_spans) {
    __shared__ float s_p[ATT_SPAN];
    __shared__ float s_red[ATT_THREADS / 32];
    __shared__ float s_acc[ATT_THREADS * 8];
    __shared__ u32 s_slot[ATT_SPAN];

    // The positions and block tables were copied before this step's kernels
    // ran, so they are read (and each key's cache slot looked up) before
    // waiting for the previous kernel, which wrote q and this row's K/V.
    const int h = blk.x, r = blk.y, span = blk.z;
    const int n_pos = (int)positions[r] + 1;
    const int n_spans = (n_pos + ATT_SPAN - 1) / ATT_SPAN;
    if (span >= n_spans) {
        wait();
        return;
    }
    const int p0 = span * ATT_SPAN;
    const int n = min(ATT_SPAN, n_pos - p0);
    // A sliding window (window > 0) hides keys before `first`. Spans stay
    // anchored at key 0 (so the span count is the row's own); a span wholly
    // before the window contributes nothing: (max -inf, sum 0, zeros).
    const int first = window > 0 ? max(0, n_pos - window) : 0;
    const u32* table = tables + table_start[r];
    for (int i = threadIdx.x; i < n; i += ATT_THREADS) {
        const int p = p0 + i;
        if (p >= first) s_slot[i] = table[p / block_size] * block_size + p % block_size;
    }
    __syncthreads();
    wait();
    if (p0 + n <= first) {
        float* sc = scratch + (((u64)r * n_heads + h) * max_spans + span) * (head_dim + 2);
        for (int d = threadIdx.x; d < head_dim + 2; d += ATT_THREADS)
            sc[d] = d == 0 ? NEG_INF : 0.0f;
        return;
    }
    const int kvh = h / (n_heads / n_kv_heads);
    const KV* kbase = kc + layer_off + (u64)kvh * head_dim;
    const KV* vbase = vc + layer_off + (u64)kvh * head_dim;
    const int t = threadIdx.x;

    // q is read from global memory by every thread (one cached line for the
    // block), so its loads, the K loads and the first V chunk's are all in
    // flight together after the wait.
    const float* qr = q + (u64)r * q_cols + h * head_dim;
    const int n_chunks = head_dim / 8;
    const int groups = ATT_THREADS / n_chunks;
    const int g = t / n_chunks, c = t % n_chunks;
    float v_first[8];
    if (g < groups && g < n && p0 + g >= first)
        kv_load8(vbase + (u64)s_slot[g] * row_width + c * 8, v_first);

    // Scores: keys t, t + ATT_THREADS, ...
    float mloc = NEG_INF;
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS; kk++) {
        const int i = t + kk * ATT_THREADS;
        if (i < n && p0 + i < first) {
            s_p[i] = NEG_INF;
        } else if (i < n) {
            const KV* k = kbase + (u64)s_slot[i] * row_width;
            float dot = 0.0f;
#pragma unroll SMELT_ATT_UNROLL
            for (int d0 = 0; d0 < head_dim; d0 += 8) {
                float kv8[8];
                kv_load8(k + d0, kv8);
                const float4 qa = *(const float4*)(qr + d0), qb = *(const float4*)(qr + d0 + 4);
                const float qv[8] = {qa.x, qa.y, qa.z, qa.w, qb.x, qb.y, qb.z, qb.w};
#pragma unroll
                for (int j = 0; j < 8; j++) dot += qv[j] * kv8[j];
            }
            const float s = dot * scale;
            s_p[i] = s;
            mloc = fmaxf(mloc, s);
        }
    }
    // Weighted V: thread (g, c) sums chunk c of keys g, g + G, ... (its
    // first chunk fetched above).
    const float m = block_max(mloc, s_red);
    float lsum = 0.0f;
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS; kk++) {
        const int i = t + kk * ATT_THREADS;
        if (i < n) {
            const float e = expf(s_p[i] - m);
            s_p[i] = e;
            lsum += e;
        }
    }
    const float l = block_sum(lsum, s_red);  // (its barriers also publish s_p)

    float acc[8];
#pragma unroll
    for (int j = 0; j < 8; j++) acc[j] = 0.0f;
    if (g < groups) {
#pragma unroll 4
        for (int i = g; i < n; i += groups) {
            if (p0 + i < first) continue;
            float v8[8];
            if (i == g) {
#pragma unroll
                for (int j = 0; j < 8; j++) v8[j] = v_first[j];
            } else {
                kv_load8(vbase + (u64)s_slot[i] * row_width + c * 8, v8);
            }
            const float w = s_p[i];
#pragma unroll
            for (int j = 0; j < 8; j++) acc[j] += w * v8[j];
        }
#pragma unroll
        for (int j = 0; j < 8; j++) s_acc[g * head_dim + c * 8 + j] = acc[j];
    }
    __syncthreads();

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
    for (int d = t; d < head_dim; d += ATT_THREADS) {
        float v = 0.0f;
        for (int j = 0; j < groups; j++) v += s_acc[j * head_dim + d];
        o[d] = v * norm;
    }
}

// Combines the spans of rows with more than one: out = sum_s acc_s e^(m_s - M)
// / sum_s l_s e^(m_s - M).
extern "C" __global__ void attention_merge(const u32* positions, int n_heads, int head_dim,
                                           const float* scratch, int max_spans, float* out,
                                           int out_cols) {
    pdl_wait_then_trigger();
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
        int n_heads, int n_kv_heads, int head_dim, float scale, int window, float* out,           \
        int out_cols, float* scratch, int max_spans) {                                            \
        attention_body<KV>(blk_here(), PdlWait{}, q, q_cols, kc, vc, layer_off, row_width, positions, table_start,       \
                           tables, block_size, n_heads, n_kv_heads, head_dim, scale, window, out, \
                           out_cols, scratch, max_spans);                                         \
    }

SMELT_ATTENTION(attention_f16, u16)
SMELT_ATTENTION(attention_f32, float)
