// The one-row fused products with f32 activations, x staged in shared
// memory: `mvs_<kind>_1_<type>`, used instead of `mv_<kind>_1_<type>` for
// one batch row when the row fits (src/fused.rs: every product of a
// quantized type and the logits of any type; only the logits with
// SMELT_CUDA_MVS=logits). H100, same run: SmolLM2 decode 1,531 vs 1,466
// tok/s with the logits only; the 8B BF16 shape's layer products were
// slower staged (127 vs 171 tok/s), so float weights stage only the logits.
//
// Why: the `_1` kernels of matvec.cu give each warp one item and read x
// (and the norm weight) from global memory per unit: the lanes of a warp
// read 32- or 16-value runs 128 bytes or more apart, so each float4 load is
// up to 32 L1 wavefronts, and every item pays them again. On the 1B shape's
// logits (128,256 rows of Q6_K) that held the product to ~1.1 TB/s. Here a
// block of MVS_WARPS warps copies x times the norm weight into shared
// memory once (padded: 4 floats after every 32, so the lanes' runs fall in
// different banks), takes 1 / rms once, and loops over items; each warp
// loads its next item's first units while it sums the current one.
//
// Same values, bit for bit, as the `_1` and `_8` kernels (batch
// invariance): the units are summed by Unit<T>::dot itself, reading the
// staged x * g (the product the one-row kernel forms per unit), in the
// same lane order (units tid, tid + nt, ...), then warp_sum and the item's
// warps in order; 1 / rms comes from the same per-lane sums of squares,
// which a warp reproduces by running Unit<T>::dot on the unstaged x with
// zero weights.

#ifndef SMELT_MVS_WARPS
#define SMELT_MVS_WARPS 8
#endif
#define MVS_WARPS SMELT_MVS_WARPS
// Blocks an SM must hold (the register cap of __launch_bounds__); the grid
// is this many blocks per SM (src/fused.rs reads the same define).
#ifndef SMELT_MVS_MIN_BLOCKS
#define SMELT_MVS_MIN_BLOCKS 2
#endif

// 1 / rms of row x as the one-row kernels reach it (item_dots): each of
// the item's nt threads sums x^2 over its units in Unit<T>::dot's order,
// then warp_sum, then the kw warps' sums in order. One warp plays the kw
// warps in turn; every lane gets the result.
template <int T>
__device__ __forceinline__ float mvs_inv_rms(const float* x, const float* g, int n_in, int kw,
                                             float eps) {
    const int lane = threadIdx.x & 31, nt = kw * 32, nu = n_in / Unit<T>::VALUES;
    const typename Unit<T>::Raw zero = {};
    float total = 0.0f;
    for (int part = 0; part < kw; part++) {
        float ss = 0.0f, da = 0.0f, db = 0.0f;
        for (int idx = part * 32 + lane; idx < nu; idx += nt)
            Unit<T>::dot(zero, zero, false, idx, x, g, da, db, ss);
        ss = warp_sum(ss);
        total = part == 0 ? ss : total + ss;
    }
    return 1.0f / sqrtf(total / (float)n_in + eps);
}

// The loop of every mvs kernel (as mvr_run, for one row): rows(item, &ra,
// &rb) names an item's weight rows (false: no such item), store(item, a,
// b, inv) writes its results (lane 0 of the item's first warp). wait()
// returns once the input may be read (PDL's wait, or the step program's
// barrier); the first units are loaded before it.
template <int T, class Wait, class Rows, class Store>
__device__ __forceinline__ void mvs_run(Blk blk, Wait wait, const float* x, int n_in,
                                        const float* g, float eps, int kw, int n_items, Rows rows,
                                        Store store) {
    extern __shared__ __align__(16) u8 mvs_smem[];
    __shared__ float s_part[MVS_WARPS][2][1];
    __shared__ float s_inv;
    float* sx = (float*)mvs_smem;
    const int warp = threadIdx.x / 32, part = warp % kw;
    const int per_block = MVS_WARPS / kw;
    const int tid = part * 32 + (threadIdx.x & 31), nt = kw * 32;
    const int nu = n_in / Unit<T>::VALUES;
    const int step = blk.gx * per_block;
    typename Unit<T>::Raw na, nb;  // the next item's unit tid
    int item = blk.x * per_block + warp / kw;
    const u8 *ra = nullptr, *rb = nullptr;
    bool active = first_item_units<T>(item, n_items, tid, nu, rows, ra, rb, na, nb);
    wait();
    // x times the norm weight (the one-row kernels' `v.x *= s.x`), padded.
    for (int e = 4 * threadIdx.x; e < n_in; e += 4 * blockDim.x) {
        float4 v = ld4(x + e);
        if (g) {
            const float4 s = ld4(g + e);
            v.x *= s.x; v.y *= s.y; v.z *= s.z; v.w *= s.w;
        }
        *(float4*)(sx + xoff<1>(e)) = v;
    }
    if (warp == 0) {
        const float inv = g ? mvs_inv_rms<T>(x, g, n_in, kw, eps) : 1.0f;
        if (threadIdx.x == 0) s_inv = inv;
    }
    __syncthreads();
    const float inv = s_inv;
    for (int first = blk.x * per_block; first < n_items; first += step) {
        item = first + warp / kw;
        const u8 *ca = ra, *cb = rb;
        const bool cur = active;
        // The next item of this warp, whose first units load during this one.
        active = item + step < n_items && rows(item + step, ra, rb);
        float a = 0.0f, b = 0.0f, unused = 0.0f;
        if (cur) {
            const bool two = cb != nullptr;
            for (int idx = tid; idx < nu; idx += nt) {
                typename Unit<T>::Raw wa, wb;
                item_units<T>(idx, tid, two, ca, cb, active, ra, rb, na, nb, wa, wb);
                Unit<T>::template dot<1>(wa, wb, two, idx, sx, nullptr, a, b, unused);
            }
        }
        float av[1] = {warp_sum(a)}, bv[1] = {warp_sum(b)};
        join_item_sums<1>(av, bv, kw, part, s_part);
        if (cur && part == 0) {
            float iv[1] = {inv};
            store(item, av, bv, iv);
        }
    }
}

template <int T, class Wait>
__device__ __forceinline__ void mvs_plain_body(Blk blk, Wait wait, MvJob j, const float* x, int n_in, const float* g,
                                               float eps, int accumulate, int kw) {
    mvs_run<T>(
        blk, wait, x, n_in, g, eps, kw, (j.n_rows + 1) / 2,
        [&](int item, const u8*& ra, const u8*& rb) { return plain_rows(j, item, ra, rb); },
        [&](int item, float a[1], float b[1], float inv[1]) {
            plain_store<1>(j, 2 * item, 0, 1, a, b, inv, accumulate);
        });
}

template <int T, class Wait>
__device__ __forceinline__ void mvs_qkv_body(Blk blk, Wait wait, MvJob jq, MvJob jk, MvJob jv, const float* x,
                                             int n_in, const float* g, float eps,
                                             const u32* positions, const float* inv_freq,
                                             int head_dim, int n_rot, int neox, void* kc,
                                             void* vc, u64 layer_off, const u32* slots,
                                             int kv_f16, int kw, int item0, int item1) {
    mvs_run<T>(
        blk, wait, x, n_in, g, eps, kw, item1 - item0,
        [&](int item, const u8*& ra, const u8*& rb) {
            return qkv_rows(qkv_item(jq, jk, jv, item0 + item, head_dim, n_rot, neox), ra, rb);
        },
        [&](int item, float a[1], float b[1], float inv[1]) {
            const QkvItem q = qkv_item(jq, jk, jv, item0 + item, head_dim, n_rot, neox);
            qkv_store<1>(q, jq, jk, 0, 1, a, b, inv, positions, inv_freq, kc, vc, layer_off,
                         slots, kv_f16);
        });
}

template <int T, class Wait>
__device__ __forceinline__ void mvs_swiglu_body(Blk blk, Wait wait, MvJob jg, MvJob ju, const float* x, int n_in,
                                                const float* g, float eps, int kw) {
    mvs_run<T>(
        blk, wait, x, n_in, g, eps, kw, jg.n_rows,
        [&](int item, const u8*& ra, const u8*& rb) { return swiglu_rows(jg, ju, item, ra, rb); },
        [&](int item, float a[1], float b[1], float inv[1]) {
            swiglu_store<1>(jg, item, 0, 1, a, b, inv);
        });
}

// The kernels take the `_1` kernels' arguments (n, the batch rows, is 1).
#define SMELT_MVS_KERNELS(SUFFIX, TT)                                                            \
    extern "C" __global__ void __launch_bounds__(MVS_WARPS * 32, SMELT_MVS_MIN_BLOCKS)                              \
        mvs_plain_1##SUFFIX(MvJob j, const float* x, int n_in, int n, const float* g,            \
                            float eps, int accumulate, int kw) {                                 \
        mvs_plain_body<TT>(blk_here(), PdlWait{}, j, x, n_in, g, eps, accumulate, kw);                                  \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MVS_WARPS * 32, SMELT_MVS_MIN_BLOCKS)                              \
        mvs_qkv_1##SUFFIX(MvJob jq, MvJob jk, MvJob jv, const float* x, int n_in, int n,         \
                          const float* g, float eps, const u32* positions,                       \
                          const float* inv_freq, int head_dim, int n_rot, int neox, void* kc,    \
                          void* vc, u64 layer_off, const u32* slots, int kv_f16, int kw,         \
                          int item0, int item1) {                                                \
        mvs_qkv_body<TT>(blk_here(), PdlWait{}, jq, jk, jv, x, n_in, g, eps, positions, inv_freq, head_dim, n_rot,      \
                         neox, kc, vc, layer_off, slots, kv_f16, kw, item0, item1);              \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MVS_WARPS * 32, SMELT_MVS_MIN_BLOCKS)                              \
        mvs_swiglu_1##SUFFIX(MvJob jg, MvJob ju, const float* x, int n_in, int n,                \
                             const float* g, float eps, int kw) {                                \
        mvs_swiglu_body<TT>(blk_here(), PdlWait{}, jg, ju, x, n_in, g, eps, kw);                                        \
    }

SMELT_MVS_KERNELS(_q4_1, W_Q4_1)
SMELT_MVS_KERNELS(_q8_0, W_Q8_0)
SMELT_MVS_KERNELS(_q4_k, W_Q4_K)
SMELT_MVS_KERNELS(_q6_k, W_Q6_K)
SMELT_MVS_KERNELS(_bf16, W_BF16)
SMELT_MVS_KERNELS(_f16, W_F16)
