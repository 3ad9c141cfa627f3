// Row-wise and element-wise ops: RMSNorm, RoPE, K/V store, SwiGLU, adds,
// gather, argmax. (Each starts with pdl_wait_then_trigger: see common.cuh.)

// out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w. One block per row.
extern "C" __global__ void rms_norm(const float* x, const float* w, float eps, int cols,
                                    float* out) {
    pdl_wait_then_trigger();
    __shared__ float partial[32];
    const float* xr = x + (u64)blockIdx.x * cols;
    float s = 0.0f;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) s += xr[i] * xr[i];
    s = warp_sum(s);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) partial[warp] = s;
    __syncthreads();
    if (warp == 0) {
        s = lane < (int)(blockDim.x / 32) ? partial[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) partial[0] = s;
    }
    __syncthreads();
    const float inv = 1.0f / sqrtf(partial[0] / (float)cols + eps);
    float* o = out + (u64)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// Rotates every head of row blockIdx.x by positions[row]. The angle is formed
// in f32 (pos * inv_freq) and its cosine and sine taken in f64, as the
// reference does. neox: pairs (i, i + n_rot/2), else (2i, 2i+1).
extern "C" __global__ void rope(float* x, int cols, int n_heads, int head_dim, int n_rot,
                                int neox, const u32* positions, const float* inv_freq) {
    pdl_wait_then_trigger();
    const int half = n_rot / 2;
    const float pos = (float)positions[blockIdx.x];
    float* xr = x + (u64)blockIdx.x * cols;
    for (int t = threadIdx.x; t < n_heads * half; t += blockDim.x) {
        const int h = t / half, i = t % half;
        const float theta = pos * inv_freq[i];
        double sn, cs;
        sincos((double)theta, &sn, &cs);
        const float c = (float)cs, s = (float)sn;
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        float* head = xr + h * head_dim;
        const float x0 = head[a], x1 = head[b];
        head[a] = x0 * c - x1 * s;
        head[b] = x0 * s + x1 * c;
    }
}

// Writes row r of k and v (width values) to cache slot slots[r] of the layer
// that starts at element layer_off. F16: rounded to nearest even.
extern "C" __global__ void kv_store_f16(u16* kc, u16* vc, const float* k, const float* v,
                                        const u32* slots, int width, u64 layer_off) {
    pdl_wait_then_trigger();
    const u64 dst = layer_off + (u64)slots[blockIdx.x] * width;
    const u64 src = (u64)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        kc[dst + i] = float_to_half(k[src + i]);
        vc[dst + i] = float_to_half(v[src + i]);
    }
}

extern "C" __global__ void kv_store_f32(float* kc, float* vc, const float* k, const float* v,
                                        const u32* slots, int width, u64 layer_off) {
    pdl_wait_then_trigger();
    const u64 dst = layer_off + (u64)slots[blockIdx.x] * width;
    const u64 src = (u64)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        kc[dst + i] = k[src + i];
        vc[dst + i] = v[src + i];
    }
}

// gate = silu(gate) * up, silu(x) = x / (1 + e^-x).
extern "C" __global__ void swiglu(float* gate, const float* up, u64 n) {
    pdl_wait_then_trigger();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// x += y.
extern "C" __global__ void add(float* x, const float* y, u64 n) {
    pdl_wait_then_trigger();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += y[i];
}

// x[r] += bias, for rows of cols values.
extern "C" __global__ void add_bias(float* x, const float* bias, int cols, u64 n) {
    pdl_wait_then_trigger();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] += bias[i % cols];
}

// out[i] = x[rows[i]], one block per output row.
extern "C" __global__ void gather_rows(const float* x, const u32* rows, int cols, float* out) {
    pdl_wait_then_trigger();
    const float* src = x + (u64)rows[blockIdx.x] * cols;
    float* dst = out + (u64)blockIdx.x * cols;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = src[i];
}

// Whether (v, i) goes before (bv, bi): larger, or equal at a lower index.
__device__ __forceinline__ bool argmax_before(float v, int i, float bv, int bi) {
    return v > bv || (v == bv && i < bi);
}

// out[r] = the index of the largest value of row r, the lowest on ties: what
// a left-to-right scan keeping the first strict maximum returns, NaN
// included (a NaN at index 0 is never beaten; a NaN elsewhere never wins).
// Grid (blocks per row, rows): block b takes `chunk` values of the row and
// leaves its (value, index) in part_v/part_i; the last block of a row to
// finish (counted in counters[r], which it sets back to 0) combines them.
// The rule is a total order, so the result does not depend on which block
// finishes last.
extern "C" __global__ void argmax_rows(const float* x, int cols, int chunk, u32* out,
                                       u32* counters, int* part_i, float* part_v) {
    pdl_wait_then_trigger();
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    __shared__ bool s_last;
    const int r = blockIdx.y, nb = gridDim.x;
    const float* xr = x + (u64)r * cols;
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    const int end = min(cols, (blockIdx.x + 1) * chunk);
    for (int i = blockIdx.x * chunk + threadIdx.x; i < end; i += blockDim.x) {
        float v = xr[i];
        if (v != v) v = i == 0 ? -NEG_INF : NEG_INF;
        if (argmax_before(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (argmax_before(ov, oi, bv, bi)) {
            bv = ov;
            bi = oi;
        }
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) {
        s_v[warp] = bv;
        s_i[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < (int)(blockDim.x / 32); w++) {
            if (argmax_before(s_v[w], s_i[w], bv, bi)) {
                bv = s_v[w];
                bi = s_i[w];
            }
        }
        part_v[(u64)r * nb + blockIdx.x] = bv;
        part_i[(u64)r * nb + blockIdx.x] = bi;
        __threadfence();
        s_last = atomicAdd(&counters[r], 1u) == (u32)(nb - 1);
    }
    __syncthreads();
    if (s_last && threadIdx.x == 0) {
        __threadfence();
        bv = NEG_INF;
        bi = 0x7fffffff;
        for (int b = 0; b < nb; b++) {
            const float v = __ldcg(&part_v[(u64)r * nb + b]);
            const int i = __ldcg(&part_i[(u64)r * nb + b]);
            if (argmax_before(v, i, bv, bi)) {
                bv = v;
                bi = i;
            }
        }
        out[r] = cols > 0 && bi < cols ? (u32)bi : 0u;
        counters[r] = 0;
    }
}

// Device memory read bandwidth (`smelt bench --device cuda`'s roofline):
// every thread streams 16-byte words of the buffer, four in flight, grid
// stride, and folds them into one word per warp (stored, so that the reads
// cannot be dropped).
extern "C" __global__ void stream_read(const uint4* p, u64 n, u32* sink) {
    pdl_wait_then_trigger();
    const u64 stride = (u64)gridDim.x * blockDim.x;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u32 acc = 0;
    for (; i + 3 * stride < n; i += 4 * stride) {
        const uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n; i += stride) {
        const uint4 a = p[i];
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) sink[(u64)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32] = acc;
}

// gate = gelu_tanh(gate) * up (Gemma's GeGLU): 0.5 g (1 + tanh(sqrt(2/pi)
// (g + 0.044715 g^3))).
extern "C" __global__ void gelu_tanh_gate(float* gate, const float* up, u64 n) {
    pdl_wait_then_trigger();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        gate[i] = 0.5f * g * (1.0f + tanhf(0.7978846f * (g + 0.044715f * g * g * g))) * up[i];
    }
}

// x = cap * tanh(x / cap) (logit soft-capping).
extern "C" __global__ void softcap(float* x, float cap, u64 n) {
    pdl_wait_then_trigger();
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = cap * tanhf(x[i] / cap);
}

// RMSNorm of each head of each row in place (Q/K norm): block (head, row),
// one warp; head_dim values, weight w of head_dim values.
extern "C" __global__ void rms_norm_heads(float* x, int cols, int head_dim, const float* w,
                                          float eps) {
    pdl_wait_then_trigger();
    float* hx = x + (u64)blockIdx.y * cols + (u64)blockIdx.x * head_dim;
    float s = 0.0f;
    for (int i = threadIdx.x; i < head_dim; i += 32) s += hx[i] * hx[i];
    s = warp_sum(s);
    const float inv = 1.0f / sqrtf(s / (float)head_dim + eps);
    for (int i = threadIdx.x; i < head_dim; i += 32) hx[i] = hx[i] * inv * w[i];
}

// The k largest values of each row (k <= 256, k <= cols), as the engine's
// top-k rule orders them (smelt_backend::top_k_sorted: value descending in
// f32::total_cmp order, ties by index ascending). One block per row: a
// radix select (four 8-bit digits) finds the k-th largest key; the keys
// above it and the lowest-index keys equal to it are gathered (each thread
// owns a contiguous stretch of the row, offsets from block scans: no
// atomics decide what is kept), then ranked. out[row][rank] = (index,
// value bits).
#define TOPK_THREADS 1024
#define TOPK_MAX 256

// Floats as unsigned keys in f32::total_cmp's order.
__device__ __forceinline__ u32 order_key(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Exclusive prefix sum over the block of one value per thread (s: shared
// scratch of TOPK_THREADS); returns this thread's offset, *total the sum.
__device__ __forceinline__ u32 block_scan(u32 v, u32* s, u32* total) {
    const int t = threadIdx.x;
    s[t] = v;
    __syncthreads();
    for (int o = 1; o < TOPK_THREADS; o <<= 1) {
        const u32 add = t >= o ? s[t - o] : 0;
        __syncthreads();
        s[t] += add;
        __syncthreads();
    }
    const u32 incl = s[t];
    *total = s[TOPK_THREADS - 1];
    __syncthreads();
    return incl - v;
}

extern "C" __global__ void __launch_bounds__(TOPK_THREADS)
    top_k_rows(const float* x, int cols, int k, u32* out) {
    pdl_wait_then_trigger();
    __shared__ u32 hist[256];
    __shared__ u32 s_prefix, s_remaining;
    __shared__ u32 s_scan[TOPK_THREADS];
    __shared__ u32 c_id[TOPK_MAX];
    __shared__ u32 c_key[TOPK_MAX];
    const float* xr = x + (u64)blockIdx.x * cols;
    const int t = threadIdx.x;

    u32 prefix = 0, mask = 0, remaining = (u32)k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = t; i < 256; i += TOPK_THREADS) hist[i] = 0;
        __syncthreads();
        for (int i = t; i < cols; i += TOPK_THREADS) {
            const u32 key = order_key(xr[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255], 1u);
        }
        __syncthreads();
        if (t == 0) {
            u32 cum = 0;
            int b = 255;
            for (; b > 0; b--) {
                if (cum + hist[b] >= remaining) break;
                cum += hist[b];
            }
            s_prefix = prefix | ((u32)b << shift);
            s_remaining = remaining - cum;
        }
        __syncthreads();
        prefix = s_prefix;
        remaining = s_remaining;
        mask |= 255u << shift;
        __syncthreads();
    }
    // prefix is the k-th largest key; `remaining` keys equal to it are kept.
    const int chunk = (cols + TOPK_THREADS - 1) / TOPK_THREADS;
    const int lo = min(cols, t * chunk), hi = min(cols, lo + chunk);
    u32 n_gt = 0, n_eq = 0;
    for (int i = lo; i < hi; i++) {
        const u32 key = order_key(xr[i]);
        n_gt += key > prefix;
        n_eq += key == prefix;
    }
    u32 total_gt, total_eq;
    u32 at_gt = block_scan(n_gt, s_scan, &total_gt);
    u32 at_eq = block_scan(n_eq, s_scan, &total_eq);
    for (int i = lo; i < hi; i++) {
        const u32 key = order_key(xr[i]);
        if (key > prefix) {
            c_id[at_gt] = (u32)i;
            c_key[at_gt] = key;
            at_gt++;
        } else if (key == prefix && at_eq < remaining) {
            c_id[total_gt + at_eq] = (u32)i;
            c_key[total_gt + at_eq] = key;
            at_eq++;
        }
    }
    __syncthreads();
    for (int i = t; i < k; i += TOPK_THREADS) {
        int rank = 0;
        for (int j = 0; j < k; j++) {
            rank += c_key[j] > c_key[i] || (c_key[j] == c_key[i] && c_id[j] < c_id[i]);
        }
        u32* o = out + ((u64)blockIdx.x * k + rank) * 2;
        o[0] = c_id[i];
        o[1] = __float_as_uint(xr[c_id[i]]);
    }
}

// Asks L2 for byte ranges of weights a later kernel reads (src/prefetch.rs):
// up to four ranges, in pieces of PF_PIECE bytes spread over the grid's
// threads. By default the requests go out after the wait (the previous
// kernel, the QKV product, has finished), so their loads fill the time the
// next kernel (decode attention) leaves the memory bus idle instead of
// competing with the QKV product; SMELT_PF_EARLY=1 issues them before the
// wait instead (weights are never written by a kernel, so both are correct;
// an A/B). Ranges start 16-byte aligned; a tail under 16 bytes is skipped.
#define PF_PIECE 16384
__device__ __forceinline__ void prefetch_ranges(const u8* const a[4], const u64 n[4]) {
    const u64 stride = (u64)gridDim.x * blockDim.x;
    const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const u64 pieces = (n[r] + PF_PIECE - 1) / PF_PIECE;
        for (u64 p = t; p < pieces; p += stride) {
            const u64 off = p * PF_PIECE;
            const u32 len = (u32)(min((u64)PF_PIECE, n[r] - off) & ~(u64)15);
#if __CUDA_ARCH__ >= 900
            if (len > 0) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a[r] + off), "r"(len) : "memory");
#endif
        }
    }
}

extern "C" __global__ void prefetch_l2(const u8* a0, u64 n0, const u8* a1, u64 n1,
                                       const u8* a2, u64 n2, const u8* a3, u64 n3) {
    const u8* const a[4] = {a0, a1, a2, a3};
    const u64 n[4] = {n0, n1, n2, n3};
#if defined(SMELT_PF_EARLY) && SMELT_PF_EARLY
    prefetch_ranges(a, n);
    pdl_wait_then_trigger();
#else
    pdl_wait_then_trigger();
    prefetch_ranges(a, n);
#endif
}
