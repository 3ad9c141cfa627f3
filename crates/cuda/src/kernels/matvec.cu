// Fused matrix products against stored (quantized) weights, with what comes
// before and after them in a transformer layer folded in:
//
//   mv_plain    out (+)= W · rms_norm?(x) + bias   (a projection; with `acc`
//               the residual add; with a norm weight the RMSNorm before it)
//   mv_qkv      Q/K/V of a layer: RMSNorm, three weights, biases, RoPE on Q
//               and K, K and V written straight into the KV cache
//   mv_swiglu   silu(W_gate · h) * (W_up · h), h = rms_norm(x)
//
// One item computes two output rows (a RoPE pair, a gate/up pair, or two
// neighbours) for NR batch rows (`_1`: decode, `_8`: prefill), so each
// weight byte is read once per NR rows and each x value once per two rows.
// An item is one warp, or for long rows 2 or 4 warps that split the row
// and add their sums in a fixed order (`kw`, chosen from the row length).
// Lanes take interleaved chunks of 8 values (`dequant8`), or for Q4_1, Q4_K
// and Q6_K wider units (units.cu); U chunks per lane are loaded before any
// is used, and the first U are loaded before `pdl_wait`, so a kernel fetches
// its weights while the previous one runs.
//
// The RMSNorm is folded in: each warp sums x^2 over the chunks it reads
// anyway and scales its dot products by 1/rms at the end, so no kernel
// writes the normed row. In the `mv_<kind>_<NR>` kernels the weight type
// is read at run time (one switch per warp), so gate and up of different
// types share a launch; Q, K and V are launched per run of one type (items
// item0..item1), each on its type's own kernel.
//
// Batch invariance: a row's sums run over the same chunks in the same order
// whatever NR and its neighbours are.

#define MV_WARPS 4
static_assert(MV_WARPS == STAGE_WARPS, "units.cu stages x for MV_WARPS warps a block");

// Units (or 8-value chunks) each lane loads before using the first, in the
// decode (one-row) kernels; Q6_K's units are larger. Tunables: see
// compile.rs (`SMELT_CUDA_DEFINES`).
#ifndef SMELT_UNITS
#define SMELT_UNITS 2
#endif
#ifndef SMELT_UNITS_Q6
#define SMELT_UNITS_Q6 1
#endif
// F16 / BF16 units are 16 bytes (8 values). H200, 8B BF16 decode: 2 units
// 225 tok/s, 4 units 213, 8 units 188.
#ifndef SMELT_UNITS_F16
#define SMELT_UNITS_F16 2
#endif

// One weight of a launch and where its results go.
struct MvJob {
    const u8* w;
    u64 row_bytes;
    float* out;
    const float* bias;  // f32 per output row, or null
    int wtype;          // WType
    int n_rows;
};

// Values c*8 .. c*8+8 of a row of f32 (x or a norm weight). For the float
// weight types rows may end mid-chunk: the missing values read as 0.
template <int T>
__device__ __forceinline__ void load_x8(const float* xr, int c, int n_in, float v[8]) {
    if (Fmt<T>::QK > 1) {
        // Rows of whole blocks: 32-byte aligned chunks.
        const float4 a = ((const float4*)(xr + c * 8))[0];
        const float4 b = ((const float4*)(xr + c * 8))[1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = c * 8 + i < n_in ? xr[c * 8 + i] : 0.0f;
    }
}

__device__ __forceinline__ float dot8(const float w[8], const float x[8]) {
    return w[0] * x[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3] +
           w[4] * x[4] + w[5] * x[5] + w[6] * x[6] + w[7] * x[7];
}

// Per-thread partial sums for one or two weight rows of type T against nv
// (<= NR) input rows x[r] = x + r * n_in: a[r] += ra . x[r], b[r] += rb .
// x[r] (rb may be null); with a norm weight g, x[r] is scaled by g on the
// fly and ss[r] += x[r]^2. The nt threads of an item (a multiple of 32)
// take chunks tid, tid + nt, ...
template <int T, int NR, int U>
__device__ __forceinline__ void dot_rows(int tid, int nt, const u8* ra, const u8* rb,
                                         const float* x, int n_in, int nv, const float* g,
                                         float a[NR], float b[NR], float ss[NR]) {
    const int nc = (n_in + 7) / 8;
    bool waited = false;
    for (int base = 0; base < nc; base += nt * U) {
        float wa[U][8], wb[U][8];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = base + nt * u + tid;
            if (c < nc) {
                dequant8<T>(ra, c, n_in, wa[u]);
                if (rb) dequant8<T>(rb, c, n_in, wb[u]);
            }
        }
        if (!waited) {
            pdl_wait_then_trigger();
            waited = true;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = base + nt * u + tid;
            if (c < nc) {
                float gv[8];
                if (g) load_x8<T>(g, c, n_in, gv);
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (r < nv) {
                        float xv[8];
                        load_x8<T>(x + (u64)r * n_in, c, n_in, xv);
                        if (g) {
                            ss[r] += dot8(xv, xv);
#pragma unroll
                            for (int i = 0; i < 8; i++) xv[i] *= gv[i];
                        }
                        a[r] += dot8(wa[u], xv);
                        if (rb) b[r] += dot8(wb[u], xv);
                    }
                }
            }
        }
    }
    if (!waited) pdl_wait_then_trigger();
}

template <int NR>
__device__ __forceinline__ void dot_rows_any(int tid, int nt, int t, const u8* ra, const u8* rb,
                                             const float* x, int n_in, int nv, const float* g,
                                             float a[NR], float b[NR], float ss[NR]) {
    // Chunks (units) in flight per lane: fewer when each is used for 8 rows,
    // and for Q6_K's large units. The kernel's registers are the most any
    // type needs, so no type may need many.
    constexpr int U = NR == 1 ? SMELT_UNITS : 1;
#define SMELT_DOT_CASE(W) \
    case W: dot_rows<W, NR, U>(tid, nt, ra, rb, x, n_in, nv, g, a, b, ss); break;
#define SMELT_UNIT_CASE(W, UW) \
    case W: dot_rows_units<W, NR, UW>(tid, nt, ra, rb, x, n_in, nv, g, a, b, ss); break;
    switch (t) {
        SMELT_DOT_CASE(W_F32)
        SMELT_DOT_CASE(W_F16)
        SMELT_DOT_CASE(W_BF16)
        SMELT_DOT_CASE(W_Q4_0)
        SMELT_UNIT_CASE(W_Q4_1, U)
        SMELT_DOT_CASE(W_Q5_0)
        SMELT_DOT_CASE(W_Q5_1)
        SMELT_UNIT_CASE(W_Q8_0, U)
        SMELT_DOT_CASE(W_Q2_K)
        SMELT_DOT_CASE(W_Q3_K)
        SMELT_UNIT_CASE(W_Q4_K, U)
        SMELT_DOT_CASE(W_Q5_K)
        SMELT_UNIT_CASE(W_Q6_K, (NR == 1 ? SMELT_UNITS_Q6 : 1))
        default: pdl_wait_then_trigger(); break;
    }
#undef SMELT_DOT_CASE
#undef SMELT_UNIT_CASE
}

// dot_rows_any for a type fixed at compile time (TT >= 0: one of the unit
// types, in a kernel of its own, which needs fewer registers than the
// kernel that reads any type), or read at run time (TT < 0).
template <int TT, int NR>
__device__ __forceinline__ void dot_rows_sel(int tid, int nt, int t, const u8* ra, const u8* rb,
                                             const float* x, int n_in, int nv, const float* g,
                                             float a[NR], float b[NR], float ss[NR]) {
    if constexpr (TT < 0) {
        dot_rows_any<NR>(tid, nt, t, ra, rb, x, n_in, nv, g, a, b, ss);
    } else {
        constexpr int UW = NR != 1 ? 1
                           : TT == W_Q6_K                  ? SMELT_UNITS_Q6
                           : (TT == W_BF16 || TT == W_F16) ? SMELT_UNITS_F16
                                                           : SMELT_UNITS;
        dot_rows_units<TT, NR, UW>(tid, nt, ra, rb, x, n_in, nv, g, a, b, ss);
    }
}

// The threads of one item: kw warps of the block (kw = 1, 2 or 4, the same
// for every launch of a weight, so a row's sums never depend on the batch)
// split a row's chunks; warp `part` of the item is warp `warp % kw`.
struct Item {
    int index;  // which item of the launch
    int part;   // 0..kw
    int tid;    // thread within the item
    int nt;     // threads per item
};

__device__ __forceinline__ Item item_of(int kw) {
    const int warp = threadIdx.x / 32;
    Item it;
    it.index = blockIdx.x * (MV_WARPS / kw) + warp / kw;
    it.part = warp % kw;
    it.tid = it.part * 32 + (threadIdx.x & 31);
    it.nt = kw * 32;
    return it;
}

// Whole dot products of row ra (type ta) and row rb (type tb, or null)
// with nv input rows, in lane 0.. of the item's first warp; inv[r] is
// 1/rms(x[r]) with a norm weight, else 1. SAME: the caller guarantees
// ta == tb. Every thread of the block must call this (it may hold a
// barrier); inactive items pass active = false.
template <int TT, int NR, bool SAME>
__device__ __forceinline__ void item_dots(const Item& it, int kw, bool active, const u8* ra,
                                          int ta, const u8* rb, int tb, const float* x,
                                          int n_in, int nv, const float* g, float eps,
                                          float a[NR], float b[NR], float inv[NR]) {
    __shared__ float s_part[MV_WARPS][3][NR];
    float ss[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) a[r] = b[r] = ss[r] = 0.0f;
    if (!active) {
        pdl_wait_then_trigger();
    } else if (SAME || rb == nullptr || ta == tb) {
        // Rows of one type share the loop (and the x loads).
        dot_rows_sel<TT, NR>(it.tid, it.nt, ta, ra, rb, x, n_in, nv, g, a, b, ss);
    } else {
        float unused[NR], ss2[NR];
#pragma unroll
        for (int r = 0; r < NR; r++) unused[r] = ss2[r] = 0.0f;
        dot_rows_sel<TT, NR>(it.tid, it.nt, ta, ra, nullptr, x, n_in, nv, g, a, unused, ss);
        dot_rows_sel<TT, NR>(it.tid, it.nt, tb, rb, nullptr, x, n_in, nv, g, b, unused, ss2);
    }
#pragma unroll
    for (int r = 0; r < NR; r++) {
        a[r] = warp_sum(a[r]);
        b[r] = warp_sum(b[r]);
        ss[r] = warp_sum(ss[r]);
    }
    if (kw > 1) {
        // The item's warps, added in order.
        const int warp = threadIdx.x / 32;
        if ((threadIdx.x & 31) == 0) {
#pragma unroll
            for (int r = 0; r < NR; r++) {
                s_part[warp][0][r] = a[r];
                s_part[warp][1][r] = b[r];
                s_part[warp][2][r] = ss[r];
            }
        }
        __syncthreads();
        if (it.part == 0) {
#pragma unroll
            for (int r = 0; r < NR; r++) {
                for (int p = 1; p < kw; p++) {
                    a[r] += s_part[warp + p][0][r];
                    b[r] += s_part[warp + p][1][r];
                    ss[r] += s_part[warp + p][2][r];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++) inv[r] = g ? 1.0f / sqrtf(ss[r] / (float)n_in + eps) : 1.0f;
}

// The kernels that loop over items (matvec_rows.cu, matvec_q8.cu,
// matvec_staged.cu): adds the item's kw warps' sums in order into the
// item's first warp (part 0), as item_dots does; a and b are already each
// warp's warp_sum. Every thread of the block calls this (block barriers).
template <int NR>
__device__ __forceinline__ void join_item_sums(float a[NR], float b[NR], int kw, int part,
                                               float (*s_part)[2][NR]) {
    if (kw <= 1) return;
    const int warp = threadIdx.x / 32;
    __syncthreads();
    if ((threadIdx.x & 31) == 0) {
#pragma unroll
        for (int r = 0; r < NR; r++) {
            s_part[warp][0][r] = a[r];
            s_part[warp][1][r] = b[r];
        }
    }
    __syncthreads();
    if (part == 0) {
#pragma unroll
        for (int r = 0; r < NR; r++) {
            for (int p = 1; p < kw; p++) {
                a[r] += s_part[warp + p][0][r];
                b[r] += s_part[warp + p][1][r];
            }
        }
    }
}

// The units (wa, wb) at unit idx of an item's rows (ca, cb) for the loops
// that load a warp's next item's first units (tid) during the current one:
// at idx == tid they are the preloaded (na, nb), and the next item's (ra,
// rb, when active) load into (na, nb) in their place.
template <int T>
__device__ __forceinline__ void item_units(int idx, int tid, bool two, const u8* ca,
                                           const u8* cb, bool active, const u8* ra,
                                           const u8* rb, typename Unit<T>::Raw& na,
                                           typename Unit<T>::Raw& nb, typename Unit<T>::Raw& wa,
                                           typename Unit<T>::Raw& wb) {
    if (idx == tid) {
        wa = na;
        wb = nb;
        if (active) {
            Unit<T>::load(ra, tid, na);
            if (rb) Unit<T>::load(rb, tid, nb);
        }
    } else {
        Unit<T>::load(ca, idx, wa);
        if (two) Unit<T>::load(cb, idx, wb);
    }
}

// A warp's first item in the resident-x and staged-x loops, before the
// wait for the previous kernel: its weight rows (ra, rb) and, when the
// item exists, their unit tid loaded into (na, nb). True if it exists.
template <int T, class Rows>
__device__ __forceinline__ bool first_item_units(int item, int n_items, int tid, int nu,
                                                 Rows rows, const u8*& ra, const u8*& rb,
                                                 typename Unit<T>::Raw& na,
                                                 typename Unit<T>::Raw& nb) {
    const bool active = item < n_items && rows(item, ra, rb);
    if (active && tid < nu) {
        Unit<T>::load(ra, tid, na);
        if (rb) Unit<T>::load(rb, tid, nb);
    }
    return active;
}

// Writes one item's results (lanes 0..nv of its first warp): rows oa and
// oa + 1 of a plain product, scaled by inv, plus the bias, added to the
// output when accumulating.
template <int NR>
__device__ __forceinline__ void plain_store(const MvJob& j, int oa, int r0, int nv,
                                            const float a[NR], const float b[NR],
                                            const float inv[NR], int accumulate) {
    const int lane = threadIdx.x & 31;
    const int ob = oa + 1;
    const bool has_b = ob < j.n_rows;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        if (lane == r && r < nv) {
            float* o = j.out + (u64)(r0 + r) * j.n_rows;
            float va = a[r] * inv[r], vb = b[r] * inv[r];
            if (j.bias) {
                va += j.bias[oa];
                if (has_b) vb += j.bias[ob];
            }
            o[oa] = accumulate ? o[oa] + va : va;
            if (has_b) o[ob] = accumulate ? o[ob] + vb : vb;
        }
    }
}

template <int TT, int NR>
__device__ __forceinline__ void mv_plain_body(MvJob j, const float* x, int n_in, int n,
                                              const float* g, float eps, int accumulate, int kw) {
    const Item it = item_of(kw);
    const int r0 = blockIdx.y * NR;
    const int oa = 2 * it.index, ob = 2 * it.index + 1;
    const bool active = oa < j.n_rows;
    const bool has_b = ob < j.n_rows;
    const int nv = min(NR, n - r0);
    float a[NR], b[NR], inv[NR];
    item_dots<TT, NR, true>(it, kw, active, j.w + (u64)oa * j.row_bytes, j.wtype,
                            has_b ? j.w + (u64)ob * j.row_bytes : nullptr, j.wtype,
                            x + (u64)r0 * n_in, n_in, nv, g, eps, a, b, inv);
    if (!active || it.part != 0) return;
    plain_store<NR>(j, oa, r0, nv, a, b, inv, accumulate);
}

// One item of a Q/K/V launch: the RoPE pairs of Q's heads, then K's, then
// row pairs of V. Pair jj of a head is rotated when jj < n_rot/2: rows (2jj,
// 2jj+1), or (jj, jj + n_rot/2) for neox; the rest are neighbours.
struct QkvItem {
    bool active;
    int job;  // 0 Q, 1 K, 2 V
    const u8* w;
    u64 row_bytes;
    int wtype;
    const float* bias;
    int ra, rb;
    int fi;   // RoPE frequency index, or -1
};

__device__ __forceinline__ QkvItem qkv_item(const MvJob& jq, const MvJob& jk, const MvJob& jv,
                                            int item, int head_dim, int n_rot, int neox) {
    const int pq = jq.n_rows / 2, pk = jk.n_rows / 2, pv = jv.n_rows / 2;
    QkvItem q;
    int p = item;
    q.job = 0;
    if (item >= pq + pk) {
        q.job = 2;
        p = item - pq - pk;
    } else if (item >= pq) {
        q.job = 1;
        p = item - pq;
    }
    q.active = item < pq + pk + pv;
    const MvJob& j = q.job == 0 ? jq : q.job == 1 ? jk : jv;
    q.w = j.w;
    q.row_bytes = j.row_bytes;
    q.wtype = j.wtype;
    q.bias = j.bias;
    const int half_pairs = head_dim / 2, rot_pairs = n_rot / 2;
    q.fi = -1;
    if (q.job < 2) {
        const int h = p / half_pairs, jj = p % half_pairs;
        if (jj < rot_pairs) {
            q.fi = jj;
            q.ra = h * head_dim + (neox ? jj : 2 * jj);
            q.rb = h * head_dim + (neox ? jj + rot_pairs : 2 * jj + 1);
        } else {
            q.ra = h * head_dim + n_rot + 2 * (jj - rot_pairs);
            q.rb = q.ra + 1;
        }
    } else {
        q.ra = 2 * p;
        q.rb = q.ra + 1;
    }
    return q;
}

// The weight rows of one item, for the kernels that loop over items
// (matvec_q8.cu, matvec_rows.cu); false past the launch's last item.
// Plain products: rows 2 item and 2 item + 1 (rb null past the end).
__device__ __forceinline__ bool plain_rows(const MvJob& j, int item, const u8*& ra, const u8*& rb) {
    const int oa = 2 * item, ob = oa + 1;
    ra = j.w + (u64)oa * j.row_bytes;
    rb = ob < j.n_rows ? j.w + (u64)ob * j.row_bytes : nullptr;
    return oa < j.n_rows;
}

// A Q/K/V item's two rows.
__device__ __forceinline__ bool qkv_rows(const QkvItem& q, const u8*& ra, const u8*& rb) {
    ra = q.w + (u64)q.ra * q.row_bytes;
    rb = q.w + (u64)q.rb * q.row_bytes;
    return q.active;
}

// Gate row `item` and up row `item`.
__device__ __forceinline__ bool swiglu_rows(const MvJob& jg, const MvJob& ju, int item,
                                            const u8*& ra, const u8*& rb) {
    ra = jg.w + (u64)item * jg.row_bytes;
    rb = ju.w + (u64)item * ju.row_bytes;
    return item < jg.n_rows;
}

// Writes one Q/K/V item's results: bias, RoPE, then Q to its output or K / V
// into the cache.
template <int NR>
__device__ __forceinline__ void qkv_store(const QkvItem& q, const MvJob& jq, const MvJob& jk,
                                          int r0, int nv, const float a[NR], const float b[NR],
                                          const float inv[NR], const u32* positions,
                                          const float* inv_freq, void* kc, void* vc,
                                          u64 layer_off, const u32* slots, int kv_f16) {
    const int lane = threadIdx.x & 31;
    const int width = jk.n_rows;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        if (lane == r && r < nv) {
            float va = a[r] * inv[r], vb = b[r] * inv[r];
            if (q.bias) {
                va += q.bias[q.ra];
                vb += q.bias[q.rb];
            }
            if (q.fi >= 0) {
                // As the reference: the angle in f32, its cosine and sine in f64.
                const float theta = (float)positions[r0 + r] * inv_freq[q.fi];
                double sn, cs;
                sincos((double)theta, &sn, &cs);
                const float c = (float)cs, s = (float)sn;
                const float x0 = va, x1 = vb;
                va = x0 * c - x1 * s;
                vb = x0 * s + x1 * c;
            }
            if (q.job == 0) {
                float* o = jq.out + (u64)(r0 + r) * jq.n_rows;
                o[q.ra] = va;
                o[q.rb] = vb;
            } else {
                const u64 at = layer_off + (u64)slots[r0 + r] * width;
                void* cache = q.job == 1 ? kc : vc;
                if (kv_f16) {
                    ((u16*)cache)[at + q.ra] = float_to_half(va);
                    ((u16*)cache)[at + q.rb] = float_to_half(vb);
                } else {
                    ((float*)cache)[at + q.ra] = va;
                    ((float*)cache)[at + q.rb] = vb;
                }
            }
        }
    }
}

template <int TT, int NR>
__device__ __forceinline__ void mv_qkv_body(MvJob jq, MvJob jk, MvJob jv, const float* x,
                                            int n_in, int n, const float* g, float eps,
                                            const u32* positions, const float* inv_freq,
                                            int head_dim, int n_rot, int neox, void* kc,
                                            void* vc, u64 layer_off, const u32* slots,
                                            int kv_f16, int kw, int item0, int item1) {
    const Item it = item_of(kw);
    const int r0 = blockIdx.y * NR;
    QkvItem q = qkv_item(jq, jk, jv, item0 + it.index, head_dim, n_rot, neox);
    q.active = q.active && item0 + it.index < item1;
    const int nv = min(NR, n - r0);
    float a[NR], b[NR], inv[NR];
    item_dots<TT, NR, true>(it, kw, q.active, q.w + (u64)q.ra * q.row_bytes, q.wtype,
                            q.w + (u64)q.rb * q.row_bytes, q.wtype, x + (u64)r0 * n_in, n_in, nv,
                            g, eps, a, b, inv);
    if (!q.active || it.part != 0) return;
    qkv_store<NR>(q, jq, jk, r0, nv, a, b, inv, positions, inv_freq, kc, vc, layer_off, slots,
                  kv_f16);
}

// Writes one gate/up item's result: gate.out[r][i] = silu(gate) * up.
template <int NR>
__device__ __forceinline__ void swiglu_store(const MvJob& jg, int i, int r0, int nv,
                                             const float a[NR], const float b[NR],
                                             const float inv[NR]) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        if (lane == r && r < nv) {
            const float gate = a[r] * inv[r], up = b[r] * inv[r];
            jg.out[(u64)(r0 + r) * jg.n_rows + i] = gate / (1.0f + expf(-gate)) * up;
        }
    }
}

// Item i: gate row i and up row i.
template <int TT, int NR>
__device__ __forceinline__ void mv_swiglu_body(MvJob jg, MvJob ju, const float* x, int n_in,
                                               int n, const float* g, float eps, int kw) {
    const Item it = item_of(kw);
    const int i = it.index;
    const int r0 = blockIdx.y * NR;
    const bool active = i < jg.n_rows;
    const int nv = min(NR, n - r0);
    float a[NR], b[NR], inv[NR];
    item_dots<TT, NR, false>(it, kw, active, jg.w + (u64)i * jg.row_bytes, jg.wtype,
                             ju.w + (u64)i * ju.row_bytes, ju.wtype, x + (u64)r0 * n_in, n_in,
                             nv, g, eps, a, b, inv);
    if (!active || it.part != 0) return;
    swiglu_store<NR>(jg, i, r0, nv, a, b, inv);
}

// Kernels `mv_<kind>_<NR>` read any weight type; `mv_<kind>_<NR>_<type>`
// only that type (every job of the launch), with fewer registers.
#define SMELT_MV_KERNELS(NR, SUFFIX, TT)                                                         \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32)                                  \
        mv_plain_##NR##SUFFIX(MvJob j, const float* x, int n_in, int n, const float* g,          \
                              float eps, int accumulate, int kw) {                               \
        mv_plain_body<TT, NR>(j, x, n_in, n, g, eps, accumulate, kw);                            \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32)                                  \
        mv_qkv_##NR##SUFFIX(MvJob jq, MvJob jk, MvJob jv, const float* x, int n_in, int n,       \
                            const float* g, float eps, const u32* positions,                     \
                            const float* inv_freq, int head_dim, int n_rot, int neox, void* kc,  \
                            void* vc, u64 layer_off, const u32* slots, int kv_f16, int kw,       \
                            int item0, int item1) {                                              \
        mv_qkv_body<TT, NR>(jq, jk, jv, x, n_in, n, g, eps, positions, inv_freq, head_dim,       \
                            n_rot, neox, kc, vc, layer_off, slots, kv_f16, kw, item0, item1);    \
    }                                                                                            \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32)                                  \
        mv_swiglu_##NR##SUFFIX(MvJob jg, MvJob ju, const float* x, int n_in, int n,              \
                               const float* g, float eps, int kw) {                              \
        mv_swiglu_body<TT, NR>(jg, ju, x, n_in, n, g, eps, kw);                                  \
    }

SMELT_MV_KERNELS(1, , -1)
SMELT_MV_KERNELS(8, , -1)
SMELT_MV_KERNELS(1, _q4_1, W_Q4_1)
SMELT_MV_KERNELS(8, _q4_1, W_Q4_1)
SMELT_MV_KERNELS(1, _q4_k, W_Q4_K)
SMELT_MV_KERNELS(8, _q4_k, W_Q4_K)
SMELT_MV_KERNELS(1, _q6_k, W_Q6_K)
SMELT_MV_KERNELS(8, _q6_k, W_Q6_K)
SMELT_MV_KERNELS(1, _q8_0, W_Q8_0)
SMELT_MV_KERNELS(8, _q8_0, W_Q8_0)
SMELT_MV_KERNELS(1, _bf16, W_BF16)
SMELT_MV_KERNELS(8, _bf16, W_BF16)
SMELT_MV_KERNELS(1, _f16, W_F16)
SMELT_MV_KERNELS(8, _f16, W_F16)
