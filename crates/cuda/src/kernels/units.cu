// Wide dot-product units for the weight types that carry most of the bytes
// of common models (Q4_1, Q4_K, Q6_K, Q8_0): a lane takes a whole run of 32 or 64
// values of a block with 16-byte (or 4-byte) loads and decodes the block
// header once per run, instead of once per 8 values as `dequant8` does. The
// values are the same as `dequant8`'s (and the scalar reference's): `d * q +
// m` and `d * q` per value for Q4_1 and Q8_0 (the same rounding); for the
// K-quants the scales multiply a group's sum instead (rounding differs
// within float error).
//
// A unit's raw bytes are loaded first (`load`), so that a kernel can issue
// the weight loads of several units before waiting for its input; `dot`
// then decodes them against one input row. Units are numbered along the row;
// unit `idx` covers the values `Unit<T>::at(idx, i)` for its runs.

// A float from byte k (0..3) of w: its bits under the exponent of 2^23
// (2^23 + byte, exact); the caller takes 2^23 (plus any offset) away.
__device__ __forceinline__ float byte_f(u32 w, int k) {
    return __int_as_float(__byte_perm(w, 0x4B000000u, 0x7540 + k));
}

// 16 bytes at a 2-byte-aligned address, as four words (five aligned loads
// and funnel shifts; the fifth word read lies within the same block).
__device__ __forceinline__ void load16_a2(const u8* p, u32 out[4]) {
    const u32* base = (const u32*)((u64)p & ~(u64)3);
    const u32 sh = (u32)((u64)p & 2) * 8;
    u32 w[5];
#pragma unroll
    for (int i = 0; i < 5; i++) w[i] = wld32(base + i);
#pragma unroll
    for (int i = 0; i < 4; i++) out[i] = __funnelshift_r(w[i], w[i + 1], sh);
}

__device__ __forceinline__ float4 ld4(const float* p) { return *(const float4*)p; }

// Where value e of a row of x lies: at e, or (PAD, x staged in shared
// memory by matvec_staged.cu) at e plus 4 floats of padding per 32 values
// before it, so that lanes reading 32-value runs hit different banks. A
// unit's runs never cross a multiple of 32, so the values of a run stay
// contiguous either way.
template <int PAD>
__device__ __forceinline__ u64 xoff(u64 e) {
    return PAD ? e + 4 * (e >> 5) : e;
}

// acc += the 4 values of x (scaled by g when there is a norm; ss += x^2).
__device__ __forceinline__ float4 x4(const float* x, const float* g, float& ss) {
    float4 v = ld4(x);
    if (g) {
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        const float4 s = ld4(g);
        v.x *= s.x; v.y *= s.y; v.z *= s.z; v.w *= s.w;
    }
    return v;
}

template <int T> struct Unit;

// Q4_1: 32 values (one block of 20 bytes): d, m, 16 bytes of nibbles;
// element j is the low nibble of byte j, element j + 16 its high nibble.
template <> struct Unit<W_Q4_1> {
    static const int VALUES = 32;
    struct Raw { u32 dm; u32 q[4]; };
    static __device__ __forceinline__ void load(const u8* row, int idx, Raw& r) {
        const u8* blk = row + (u64)idx * 20;
        r.dm = wld32(blk);
#pragma unroll
        for (int i = 0; i < 4; i++) r.q[i] = wld32(blk + 4 + 4 * i);
    }
    // a += A . x (and b += B . x when two): x is the input row.
    template <int PAD = 0>
    static __device__ __forceinline__ void dot(const Raw& A, const Raw& B, bool two, int idx,
                                               const float* x, const float* g, float& a,
                                               float& b, float& ss) {
        const float da = half_to_float((u16)(A.dm & 0xFFFF)), ma = half_to_float((u16)(A.dm >> 16));
        const float db = half_to_float((u16)(B.dm & 0xFFFF)), mb = half_to_float((u16)(B.dm >> 16));
        const float* xl = x + xoff<PAD>((u64)idx * 32);
        const float* gl = g ? g + (u64)idx * 32 : nullptr;
        float sa = 0.0f, sb = 0.0f;
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float4 xv = x4(xl + 16 * half + 4 * i, gl ? gl + 16 * half + 4 * i : nullptr, ss);
                const u32 qa = half ? (A.q[i] >> 4) & 0x0F0F0F0F : A.q[i] & 0x0F0F0F0F;
                sa += (da * (byte_f(qa, 0) - 8388608.0f) + ma) * xv.x +
                      (da * (byte_f(qa, 1) - 8388608.0f) + ma) * xv.y +
                      (da * (byte_f(qa, 2) - 8388608.0f) + ma) * xv.z +
                      (da * (byte_f(qa, 3) - 8388608.0f) + ma) * xv.w;
                if (two) {
                    const u32 qb = half ? (B.q[i] >> 4) & 0x0F0F0F0F : B.q[i] & 0x0F0F0F0F;
                    sb += (db * (byte_f(qb, 0) - 8388608.0f) + mb) * xv.x +
                          (db * (byte_f(qb, 1) - 8388608.0f) + mb) * xv.y +
                          (db * (byte_f(qb, 2) - 8388608.0f) + mb) * xv.z +
                          (db * (byte_f(qb, 3) - 8388608.0f) + mb) * xv.w;
                }
            }
        }
        a += sa;
        b += sb;
    }
};

// Q4_K: 32 values of a 256-value block (144 bytes: d, dmin, 12 bytes of
// 6-bit scales and mins, 128 bytes of nibbles). Unit k (0..7) of a block
// reads qs[32c + 16h .. +16] (c = k / 2, h = k % 2): the low nibbles are
// elements 64c + 16h + i of group 2c, the high ones 64c + 32 + 16h + i of
// group 2c + 1. The 16-byte header holds d, dmin and every scale. A group's
// sum is taken as (d sc) sum(q x) - (dmin m) sum(x): fewer operations per
// value than dequantizing each one (the same value up to rounding).
template <> struct Unit<W_Q4_K> {
    static const int VALUES = 32;
    struct Raw { uint4 h; uint4 q; };
    static __device__ __forceinline__ void load(const u8* row, int idx, Raw& r) {
        const u8* blk = row + (u64)(idx >> 3) * 144;
        const int k = idx & 7;
        r.h = wld128(blk);
        r.q = wld128(blk + 16 + 32 * (k >> 1) + 16 * (k & 1));
    }
    static __device__ __forceinline__ u32 sbyte(const uint4& h, int j) {
        const u32 w = j < 4 ? h.y : (j < 8 ? h.z : h.w);
        return (w >> (8 * (j & 3))) & 0xFF;
    }
    // (d * sc, dmin * m) of group gi (0..7), without branches.
    static __device__ __forceinline__ void scales(const uint4& h, int gi, float& dl, float& ml) {
        const u32 s_g = sbyte(h, gi), s_g4 = sbyte(h, gi + 4), s_gm4 = sbyte(h, gi & 3);
        const bool lo = gi < 4;
        const u32 sc = lo ? (s_g & 63) : ((s_g4 & 0x0F) | ((s_gm4 >> 6) << 4));
        const u32 mn = lo ? (s_g4 & 63) : ((s_g4 >> 4) | ((s_g >> 6) << 4));
        dl = half_to_float((u16)(h.x & 0xFFFF)) * u2f(sc);
        ml = half_to_float((u16)(h.x >> 16)) * u2f(mn);
    }
    template <int PAD = 0>
    static __device__ __forceinline__ void dot(const Raw& A, const Raw& B, bool two, int idx,
                                               const float* x, const float* g, float& a,
                                               float& b, float& ss) {
        // idx = threadIdx.x (mod 32): k, and which scales it needs, are the thread's.
        const int k = threadIdx.x & 7, c = k >> 1, hf = k & 1;
        const u64 e0 = (u64)(idx >> 3) * 256 + 64 * c + 16 * hf;
        const float* xr[2] = {x + xoff<PAD>(e0), x + xoff<PAD>(e0 + 32)};
        const float* gl = g ? g + e0 : nullptr;
        const u32 qa[4] = {A.q.x, A.q.y, A.q.z, A.q.w};
        const u32 qb[4] = {B.q.x, B.q.y, B.q.z, B.q.w};
#pragma unroll
        for (int hi = 0; hi < 2; hi++) {
            float qxa = 0.0f, qxb = 0.0f, sx = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float4 xv = x4(xr[hi] + 4 * i, gl ? gl + 32 * hi + 4 * i : nullptr, ss);
                sx += (xv.x + xv.y) + (xv.z + xv.w);
                const u32 wa = hi ? (qa[i] >> 4) & 0x0F0F0F0F : qa[i] & 0x0F0F0F0F;
                qxa += (byte_f(wa, 0) - 8388608.0f) * xv.x + (byte_f(wa, 1) - 8388608.0f) * xv.y +
                       (byte_f(wa, 2) - 8388608.0f) * xv.z + (byte_f(wa, 3) - 8388608.0f) * xv.w;
                if (two) {
                    const u32 wb = hi ? (qb[i] >> 4) & 0x0F0F0F0F : qb[i] & 0x0F0F0F0F;
                    qxb += (byte_f(wb, 0) - 8388608.0f) * xv.x + (byte_f(wb, 1) - 8388608.0f) * xv.y +
                           (byte_f(wb, 2) - 8388608.0f) * xv.z + (byte_f(wb, 3) - 8388608.0f) * xv.w;
                }
            }
            float dl, ml;
            scales(A.h, 2 * c + hi, dl, ml);
            a += dl * qxa - ml * sx;
            if (two) {
                scales(B.h, 2 * c + hi, dl, ml);
                b += dl * qxb - ml * sx;
            }
        }
    }
};

// Q6_K: 64 values of a 256-value block (210 bytes, 2-byte aligned: ql[128],
// qh[64], 16 signed scales, d). Unit k (0..3): half hh = k / 2 and l0 =
// 16 (k % 2); for j = 0..3 and i = 0..15 it holds element 128hh + l0 + 32j +
// i: the low (j < 2) or high nibble of ql[64hh + 32(j % 2) + l0 + i], bits
// 2j..2j+1 of qh[32hh + l0 + i] above them, scale 8hh + l0/16 + 2j.
template <> struct Unit<W_Q6_K> {
    static const int VALUES = 64;
    struct Raw { u32 l0[4]; u32 l1[4]; u32 h[4]; u32 sc; u32 d; };
    static __device__ __forceinline__ void load(const u8* row, int idx, Raw& r) {
        const u8* blk = row + (u64)(idx >> 2) * 210;
        const int k = idx & 3, hh = k >> 1, l0 = 16 * (k & 1);
        load16_a2(blk + 64 * hh + l0, r.l0);
        load16_a2(blk + 64 * hh + 32 + l0, r.l1);
        load16_a2(blk + 128 + 32 * hh + l0, r.h);
        const u8* s = blk + 192 + 8 * hh + l0 / 16;
        r.sc = (u32)s[0] | ((u32)s[2] << 8) | ((u32)s[4] << 16) | ((u32)s[6] << 24);
        r.d = ld_u16(blk + 208);
    }
    template <int PAD = 0>
    static __device__ __forceinline__ void dot(const Raw& A, const Raw& B, bool two, int idx,
                                               const float* x, const float* g, float& a,
                                               float& b, float& ss) {
        // idx = threadIdx.x (mod 32): k is the thread's.
        const int k = threadIdx.x & 3, hh = k >> 1, l0 = 16 * (k & 1);
        const float da = half_to_float((u16)A.d), db = half_to_float((u16)B.d);
        const u64 e0 = (u64)(idx >> 2) * 256 + 128 * hh + l0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float* xl = x + xoff<PAD>(e0 + 32 * j);
            const float* gl = g ? g + e0 + 32 * j : nullptr;
            float qxa = 0.0f, qxb = 0.0f;
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const float4 xv = x4(xl + 4 * i, gl ? gl + 4 * i : nullptr, ss);
                const u32 la = (j & 1) ? A.l1[i] : A.l0[i];
                const u32 wa = ((j < 2 ? la : la >> 4) & 0x0F0F0F0F) |
                               (((A.h[i] >> (2 * j)) & 0x03030303) << 4);
                // 8388640 = 2^23 + 32: the float is q - 32, exactly.
                qxa += (byte_f(wa, 0) - 8388640.0f) * xv.x + (byte_f(wa, 1) - 8388640.0f) * xv.y +
                       (byte_f(wa, 2) - 8388640.0f) * xv.z + (byte_f(wa, 3) - 8388640.0f) * xv.w;
                if (two) {
                    const u32 lb = (j & 1) ? B.l1[i] : B.l0[i];
                    const u32 wb = ((j < 2 ? lb : lb >> 4) & 0x0F0F0F0F) |
                                   (((B.h[i] >> (2 * j)) & 0x03030303) << 4);
                    qxb += (byte_f(wb, 0) - 8388640.0f) * xv.x + (byte_f(wb, 1) - 8388640.0f) * xv.y +
                           (byte_f(wb, 2) - 8388640.0f) * xv.z + (byte_f(wb, 3) - 8388640.0f) * xv.w;
                }
            }
            // (i8) scale byte j as a float, exactly; the group's sum is (d sc) sum((q - 32) x).
            a += da * (u2f(((A.sc >> (8 * j)) & 0xFF) ^ 0x80) - 128.0f) * qxa;
            if (two) b += db * (u2f(((B.sc >> (8 * j)) & 0xFF) ^ 0x80) - 128.0f) * qxb;
        }
    }
};

// Q8_0: 32 values (one block of 34 bytes, 2-byte aligned): d, then 32
// signed bytes. Each value is dequantized as `d * q` before the product,
// as the reference does.
template <> struct Unit<W_Q8_0> {
    static const int VALUES = 32;
    struct Raw { u32 q[8]; u32 d; };
    // The 32 bytes at p = blk + 2 from the 4-aligned words at or before p;
    // the last two bytes come from a 2-byte load at p + 30, so nothing past
    // the block is read.
    static __device__ __forceinline__ void load(const u8* row, int idx, Raw& r) {
        const u8* blk = row + (u64)idx * 34;
        const u8* p = blk + 2;
        const u32* base = (const u32*)((u64)p & ~(u64)3);
        const u32 sh = (u32)((u64)p & 2) * 8;
        u32 w[9];
#pragma unroll
        for (int i = 0; i < 8; i++) w[i] = wld32(base + i);
        w[8] = ld_u16(p + 30);
#pragma unroll
        for (int i = 0; i < 8; i++) r.q[i] = __funnelshift_r(w[i], w[i + 1], sh);
        r.d = ld_u16(blk);
    }
    template <int PAD = 0>
    static __device__ __forceinline__ void dot(const Raw& A, const Raw& B, bool two, int idx,
                                               const float* x, const float* g, float& a,
                                               float& b, float& ss) {
        const float da = half_to_float((u16)A.d), db = half_to_float((u16)B.d);
        const float* xl = x + xoff<PAD>((u64)idx * 32);
        const float* gl = g ? g + (u64)idx * 32 : nullptr;
        float sa = 0.0f, sb = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const float4 xv = x4(xl + 4 * i, gl ? gl + 4 * i : nullptr, ss);
            // Signed bytes, offset by 128 (flip the top bit), then 2^23 + 128 taken away.
            const u32 wa = A.q[i] ^ 0x80808080u;
            sa += (da * (byte_f(wa, 0) - 8388736.0f)) * xv.x + (da * (byte_f(wa, 1) - 8388736.0f)) * xv.y +
                  (da * (byte_f(wa, 2) - 8388736.0f)) * xv.z + (da * (byte_f(wa, 3) - 8388736.0f)) * xv.w;
            if (two) {
                const u32 wb = B.q[i] ^ 0x80808080u;
                sb += (db * (byte_f(wb, 0) - 8388736.0f)) * xv.x + (db * (byte_f(wb, 1) - 8388736.0f)) * xv.y +
                      (db * (byte_f(wb, 2) - 8388736.0f)) * xv.z + (db * (byte_f(wb, 3) - 8388736.0f)) * xv.w;
            }
        }
        a += sa;
        b += sb;
    }
};

// F16 and BF16: 8 values (16 bytes, one vector load) per unit, for rows
// whose length is a multiple of 8 (the typed kernels are picked only then;
// other rows take `dequant8`). Each value converts exactly to f32; the sum
// runs over the 8 values in order, as `dot8`.
template <int T> struct FloatUnit {
    static const int VALUES = 8;
    struct Raw { uint4 q; };
    static __device__ __forceinline__ void load(const u8* row, int idx, Raw& r) {
        r.q = wld128(row + (u64)idx * 16);
    }
    // The two values of word w.
    static __device__ __forceinline__ float lo(u32 w) {
        return T == W_BF16 ? __uint_as_float(w << 16) : half_to_float((u16)(w & 0xFFFF));
    }
    static __device__ __forceinline__ float hi(u32 w) {
        return T == W_BF16 ? __uint_as_float(w & 0xFFFF0000u) : half_to_float((u16)(w >> 16));
    }
    static __device__ __forceinline__ float dot8w(const uint4& q, const float4& x0, const float4& x1) {
        return lo(q.x) * x0.x + hi(q.x) * x0.y + lo(q.y) * x0.z + hi(q.y) * x0.w +
               lo(q.z) * x1.x + hi(q.z) * x1.y + lo(q.w) * x1.z + hi(q.w) * x1.w;
    }
    template <int PAD = 0>
    static __device__ __forceinline__ void dot(const Raw& A, const Raw& B, bool two, int idx,
                                               const float* x, const float* g, float& a,
                                               float& b, float& ss) {
        const float* xl = x + xoff<PAD>((u64)idx * 8);
        const float* gl = g ? g + (u64)idx * 8 : nullptr;
        const float4 x0 = x4(xl, gl, ss);
        const float4 x1 = x4(xl + 4, gl ? gl + 4 : nullptr, ss);
        a += dot8w(A.q, x0, x1);
        if (two) b += dot8w(B.q, x0, x1);
    }
};
template <> struct Unit<W_BF16> : FloatUnit<W_BF16> {};
template <> struct Unit<W_F16> : FloatUnit<W_F16> {};

// Staging of x for the multi-row kernels (NR > 1), on unless
// SMELT_STAGE_X=0: each warp copies the values of its 32 units of x (one
// batch row at a time, and the norm weight once per unit) into its own part
// of shared memory with coalesced float4 loads, and the lanes read their
// runs from there. Without it, every batch row of every unit pays the
// uncoalesced global loads again (32 L1 wavefronts a float4 load), which
// bounds the multi-row kernels.
#ifndef SMELT_STAGE_X
#define SMELT_STAGE_X 1
#endif
// Floats of shared memory a warp stages into: x and g tiles of 32 units of
// 32 values (1024 + 128 padding each).
#define STAGE_WARP_FLOATS 2304
#define STAGE_WARPS 4

// The block's staging memory: one buffer, whatever unit types a kernel
// instantiates.
__device__ __forceinline__ float* stage_buffer() {
    __shared__ __align__(16) float s_stage[STAGE_WARPS * STAGE_WARP_FLOATS];
    return s_stage + (threadIdx.x / 32) * STAGE_WARP_FLOATS;
}

// The values p - v0 of a warp's tile sit at tile[STAGE_PAD(p - v0)]: 4
// floats of padding after every 32, so that the lanes' float4 reads of
// their own 32-value runs fall in different banks.
#define STAGE_PAD(q) ((q) + 4 * ((q) >> 5))

// Copies values src[0..n) (n a multiple of 4) into tile, padded: lane l
// moves float4s 4l, 4l + 128, ...
__device__ __forceinline__ void stage_tile(float* tile, const float* src, int n) {
    const int lane = threadIdx.x & 31;
    __syncwarp();  // the lanes' reads of the previous tile are done
    for (int q = 4 * lane; q < n; q += 128) *(float4*)(tile + STAGE_PAD(q)) = ld4(src + q);
    __syncwarp();
}

// The multi-row kernels' form of the 32-value units of Q4_1 and Q8_0: the
// unit's weights are decoded once (`deq`) and then used for every batch
// row (`dot`), instead of decoded again per row. Each value, product and
// sum is the same expression as in Unit<T>::dot, in the same order, so
// rows stay bit-identical to the one-row kernels (tested).
template <int T> struct Decoded;

template <> struct Decoded<W_Q4_1> {
    static __device__ __forceinline__ void deq(const Unit<W_Q4_1>::Raw& A, float w[32]) {
        const float d = half_to_float((u16)(A.dm & 0xFFFF)), m = half_to_float((u16)(A.dm >> 16));
#pragma unroll
        for (int half = 0; half < 2; half++) {
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const u32 q = half ? (A.q[i] >> 4) & 0x0F0F0F0F : A.q[i] & 0x0F0F0F0F;
#pragma unroll
                for (int k = 0; k < 4; k++) w[16 * half + 4 * i + k] = d * (byte_f(q, k) - 8388608.0f) + m;
            }
        }
    }
};

template <> struct Decoded<W_Q8_0> {
    static __device__ __forceinline__ void deq(const Unit<W_Q8_0>::Raw& A, float w[32]) {
        const float d = half_to_float((u16)A.d);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const u32 q = A.q[i] ^ 0x80808080u;
#pragma unroll
            for (int k = 0; k < 4; k++) w[4 * i + k] = d * (byte_f(q, k) - 8388736.0f);
        }
    }
};

// a += wa . x and b += wb . x over one 32-value run (xs: this lane's
// staged run of x, gs: of the norm weight, or null), four values at a time
// as Unit<T>::dot sums them.
__device__ __forceinline__ void decoded_dot(const float wa[32], const float wb[32], bool two,
                                            const float* xs, const float* gs, float& a, float& b,
                                            float& ss) {
    float sa = 0.0f, sb = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        float4 v = *(const float4*)(xs + 4 * i);
        if (gs) {
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            const float4 s = *(const float4*)(gs + 4 * i);
            v.x *= s.x; v.y *= s.y; v.z *= s.z; v.w *= s.w;
        }
        const float* w = wa + 4 * i;
        sa += w[0] * v.x + w[1] * v.y + w[2] * v.z + w[3] * v.w;
        if (two) {
            const float* u = wb + 4 * i;
            sb += u[0] * v.x + u[1] * v.y + u[2] * v.z + u[3] * v.w;
        }
    }
    a += sa;
    b += sb;
}

// dot_rows_units for NR > 1, Q4_1 and Q8_0, with staged x (U = 1): each
// unit decoded once, then its dot product with every batch row, with the
// same units, values and operations, in the same order, as the one-row
// kernels.
template <int T, int NR>
__device__ __forceinline__ void dot_rows_staged(int tid, int nt, const u8* ra, const u8* rb,
                                                const float* x, int n_in, int nv, const float* g,
                                                float a[NR], float b[NR], float ss[NR]) {
    static_assert(Unit<T>::VALUES == 32, "staged runs are 32 values");
    float* sx = stage_buffer();
    float* sg = g ? sx + STAGE_PAD(32 * 32) : nullptr;
    const int nu = n_in / 32;
    const bool two = rb != nullptr;
    const int lane = threadIdx.x & 31;
    // This lane's run: unit idx - u0 = lane of the warp's tile.
    const float* xs = sx + STAGE_PAD(32 * lane);
    const float* gs = sg ? sg + STAGE_PAD(32 * lane) : nullptr;
    bool waited = false;
    for (int base = 0; base < nu; base += nt) {
        const int idx = base + tid;
        typename Unit<T>::Raw wa, wb;
        if (idx < nu) {
            Unit<T>::load(ra, idx, wa);
            if (two) Unit<T>::load(rb, idx, wb);
        }
        if (!waited) {
            pdl_wait_then_trigger();
            waited = true;
        }
        // This warp's units: idx - lane .. +32 (the whole warp agrees).
        const int u0 = idx - lane;
        if (u0 >= nu) continue;
        const u64 v0 = (u64)u0 * 32;
        const int n = (min(nu, u0 + 32) - u0) * 32;
        if (sg) stage_tile(sg, g + v0, n);
        float fa[32], fb[32];
        if (idx < nu) {
            Decoded<T>::deq(wa, fa);
            if (two) Decoded<T>::deq(wb, fb);
        }
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (r < nv) {
                stage_tile(sx, x + (u64)r * n_in + v0, n);
                if (idx < nu) decoded_dot(fa, fb, two, xs, gs, a[r], b[r], ss[r]);
            }
        }
    }
    if (!waited) pdl_wait_then_trigger();
}

// Per-thread partial sums as `dot_rows` (matvec.cu), one unit per thread at
// a time, U units per thread loaded before the first is used. Units tid,
// tid + nt, ...: nt is a multiple of 32, so a thread's units are all at the
// same position (mod 8) of their blocks, which `dot` relies on.
template <int T, int NR, int U>
__device__ __forceinline__ void dot_rows_units(int tid, int nt, const u8* ra, const u8* rb,
                                               const float* x, int n_in, int nv, const float* g,
                                               float a[NR], float b[NR], float ss[NR]) {
    // Staged for the 32-value units whose runs read conflict-free (Q4_1,
    // Q8_0): measured faster at 16 and 64 rows on SmolLM2. Staged Q6_K made
    // the 1B shape's 64-row logits slower (bank conflicts); Q4_K and the
    // 16-bit floats are unmeasured. Either path gives the same values.
    if constexpr (NR > 1 && SMELT_STAGE_X && (T == W_Q4_1 || T == W_Q8_0)) {
        dot_rows_staged<T, NR>(tid, nt, ra, rb, x, n_in, nv, g, a, b, ss);
        return;
    }
    const int nu = n_in / Unit<T>::VALUES;
    const bool two = rb != nullptr;
    bool waited = false;
    for (int base = 0; base < nu; base += nt * U) {
        typename Unit<T>::Raw wa[U], wb[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int idx = base + nt * u + tid;
            if (idx < nu) {
                Unit<T>::load(ra, idx, wa[u]);
                if (two) Unit<T>::load(rb, idx, wb[u]);
            }
        }
        if (!waited) {
            pdl_wait_then_trigger();
            waited = true;
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int idx = base + nt * u + tid;
            if (idx < nu) {
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (r < nv) {
                        // (wb[u] is read only when two.)
                        Unit<T>::dot(wa[u], wb[u], two, idx, x + (u64)r * n_in, g, a[r], b[r],
                                     ss[r]);
                    }
                }
            }
        }
    }
    if (!waited) pdl_wait_then_trigger();
}
