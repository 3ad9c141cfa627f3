// Dequantization of stored weight rows, 8 consecutive values at a time, for
// every weight type, and the embedding lookup built on it (the matrix
// products that use it are in matvec.cu).
//
// A row is split into chunks of 8 values. Every quantized block holds a whole
// number of chunks (32 or 256 values), and each chunk lies inside one scale
// group, so a chunk needs one block header and one scale. `dequant8<T>`
// writes chunk `c` of `row` to `v`; for the unquantized types a chunk may run
// past the row's end (`n` values), and those values read as 0.
//
// The formulas and rounding order follow the scalar reference
// (crates/tensor/src/reference): `d * (q - offset)`, `d * q + m`, and for the
// K-quants `(d * sc) * q - (dmin * m)`. Small integers become floats through
// `u2f` (exact, and cheaper than a conversion instruction).

enum WType {
    W_F32 = 0, W_F16 = 1, W_BF16 = 2,
    W_Q4_0 = 3, W_Q4_1 = 4, W_Q5_0 = 5, W_Q5_1 = 6, W_Q8_0 = 7,
    W_Q2_K = 8, W_Q3_K = 9, W_Q4_K = 10, W_Q5_K = 11, W_Q6_K = 12,
};

template <int T> struct Fmt;
template <> struct Fmt<W_F32>  { static const int QK = 1;   static const int BYTES = 4; };
template <> struct Fmt<W_F16>  { static const int QK = 1;   static const int BYTES = 2; };
template <> struct Fmt<W_BF16> { static const int QK = 1;   static const int BYTES = 2; };
template <> struct Fmt<W_Q4_0> { static const int QK = 32;  static const int BYTES = 18; };
template <> struct Fmt<W_Q4_1> { static const int QK = 32;  static const int BYTES = 20; };
template <> struct Fmt<W_Q5_0> { static const int QK = 32;  static const int BYTES = 22; };
template <> struct Fmt<W_Q5_1> { static const int QK = 32;  static const int BYTES = 24; };
template <> struct Fmt<W_Q8_0> { static const int QK = 32;  static const int BYTES = 34; };
template <> struct Fmt<W_Q2_K> { static const int QK = 256; static const int BYTES = 84; };
template <> struct Fmt<W_Q3_K> { static const int QK = 256; static const int BYTES = 110; };
template <> struct Fmt<W_Q4_K> { static const int QK = 256; static const int BYTES = 144; };
template <> struct Fmt<W_Q5_K> { static const int QK = 256; static const int BYTES = 176; };
template <> struct Fmt<W_Q6_K> { static const int QK = 256; static const int BYTES = 210; };

// The 8 bytes at p, whose address is a multiple of A (2, 4 or 8), loaded
// with as few instructions as that alignment allows.
template <int A>
__device__ __forceinline__ void load8(const u8* p, u32 w[2]) {
    if (A >= 8) {
        const uint2 v = *(const uint2*)p;
        w[0] = v.x;
        w[1] = v.y;
    } else if (A == 4) {
        w[0] = *(const u32*)p;
        w[1] = *(const u32*)(p + 4);
    } else {
        const u16* q = (const u16*)p;
        w[0] = (u32)q[0] | ((u32)q[1] << 16);
        w[1] = (u32)q[2] | ((u32)q[3] << 16);
    }
}

// Byte i (0..8) of two loaded words.
__device__ __forceinline__ int byte_at(const u32 w[2], int i) {
    return (w[i / 4] >> (8 * (i % 4))) & 0xFF;
}

// The 4-bit quants of elements e0..e0+8 of a 32-value block: element j is the
// low nibble of qs[j], element j + 16 its high nibble. `qs + (e0 & 15)` is a
// multiple of A.
template <int A>
__device__ __forceinline__ void nibbles8(const u8* qs, int e0, int q[8]) {
    const int shift = e0 >= 16 ? 4 : 0;
    u32 w[2];
    load8<A>(qs + (e0 & 15), w);
#pragma unroll
    for (int i = 0; i < 8; i++) q[i] = (byte_at(w, i) >> shift) & 0x0F;
}

// Scale and min of group g (0..8) of Q4_K/Q5_K, from the 12 packed bytes.
__device__ __forceinline__ void scale_min_k4(const u8* s, int g, int* sc, int* mn) {
    if (g < 4) {
        *sc = s[g] & 63;
        *mn = s[g + 4] & 63;
    } else {
        *sc = (s[g + 4] & 0x0F) | ((s[g - 4] >> 6) << 4);
        *mn = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
    }
}

template <int T>
__device__ __forceinline__ void dequant8(const u8* row, int c, int n, float v[8]) {
    const int e0 = c * 8;
    if (T == W_F32 || T == W_F16 || T == W_BF16) {
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int e = e0 + i;
            float x = 0.0f;
            if (e < n) {
                if (T == W_F32) x = ((const float*)row)[e];
                else if (T == W_F16) x = half_to_float(((const u16*)row)[e]);
                else x = bf16_to_float(((const u16*)row)[e]);
            }
            v[i] = x;
        }
        return;
    }
    const int QK = Fmt<T>::QK;
    const u8* blk = row + (size_t)(e0 / QK) * Fmt<T>::BYTES;
    const int e = e0 % QK;  // first element of the chunk within its block
    int q[8];
    if (T == W_Q4_0) {
        const float d = ld_half(blk);
        nibbles8<2>(blk + 2, e, q);  // 18-byte blocks: 2-aligned
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = d * (u2f(q[i]) - 8.0f);
    } else if (T == W_Q4_1) {
        const float d = ld_half(blk), m = ld_half(blk + 2);
        nibbles8<4>(blk + 4, e, q);  // 20-byte blocks: 4-aligned
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = d * u2f(q[i]) + m;
    } else if (T == W_Q5_0) {
        const float d = ld_half(blk);
        const u32 qh = ld_u32_a2(blk + 2);
        nibbles8<2>(blk + 6, e, q);  // 22-byte blocks
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = d * (u2f(q[i] | (((qh >> (e + i)) & 1) << 4)) - 16.0f);
    } else if (T == W_Q5_1) {
        const float d = ld_half(blk), m = ld_half(blk + 2);
        const u32 qh = ld_u32_a2(blk + 4);
        nibbles8<8>(blk + 8, e, q);  // 24-byte blocks: 8-aligned
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = d * u2f(q[i] | (((qh >> (e + i)) & 1) << 4)) + m;
    } else if (T == W_Q8_0) {
        const float d = ld_half(blk);
        u32 w[2];
        load8<2>(blk + 2 + e, w);  // 34-byte blocks
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = d * (u2f(byte_at(w, i) ^ 0x80) - 128.0f);  // (i8) byte
    } else if (T == W_Q2_K) {
        // scales[16]@0, 2-bit plane qs[64]@16, d@80, dmin@82; groups of 16.
        const int g = e / 16;
        const u8 sm = blk[g];
        const float dl = ld_half(blk + 80) * u2f(sm & 0x0F);
        const float ml = ld_half(blk + 82) * u2f(sm >> 4);
        u32 w[2];
        load8<4>(blk + 16 + 32 * (e / 128) + (e % 32), w);  // 84-byte blocks
        const int shift = 2 * ((e % 128) / 32);
#pragma unroll
        for (int i = 0; i < 8; i++) v[i] = dl * u2f((byte_at(w, i) >> shift) & 3) - ml;
    } else if (T == W_Q3_K) {
        // hmask[32]@0, 2-bit plane qs[64]@32, scales[12]@96, d@108; groups of 16.
        const int g = e / 16;
        const u8* s = blk + 96;
        const int lo = (s[g % 8] >> (4 * (g / 8))) & 0x0F;
        const int hi = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
        const float dl = ld_half(blk + 108) * (u2f(lo | (hi << 4)) - 32.0f);
        u32 wq[2], wh[2];
        load8<2>(blk + 32 + 32 * (e / 128) + (e % 32), wq);  // 110-byte blocks
        load8<2>(blk + (e % 32), wh);
        const int shift = 2 * ((e % 128) / 32);
        const int hbit = e / 32;
#pragma unroll
        for (int i = 0; i < 8; i++) {
            // low - (h ? 0 : 4) == (low | h << 2) - 4, as low < 4.
            const int low = (byte_at(wq, i) >> shift) & 3;
            const int h = (byte_at(wh, i) >> hbit) & 1;
            v[i] = dl * (u2f(low | (h << 2)) - 4.0f);
        }
    } else if (T == W_Q4_K || T == W_Q5_K) {
        // d@0, dmin@2, scales[12]@4, (Q5_K: qh[32]@16), 4-bit plane qs[128];
        // groups of 32. Element 64 c + 32 n + l is nibble n of qs[32 c + l].
        int sc, mn;
        scale_min_k4(blk + 4, e / 32, &sc, &mn);
        const float dl = ld_half(blk) * u2f(sc);
        const float ml = ld_half(blk + 2) * u2f(mn);
        // 144- and 176-byte blocks: 16-aligned, fields 8-aligned.
        const int qoff = T == W_Q4_K ? 16 : 48;
        u32 wq[2];
        load8<8>(blk + qoff + 32 * (e / 64) + (e % 32), wq);
        const int shift = ((e / 32) & 1) * 4;
        if (T == W_Q4_K) {
#pragma unroll
            for (int i = 0; i < 8; i++) v[i] = dl * u2f((byte_at(wq, i) >> shift) & 0x0F) - ml;
        } else {
            u32 wh[2];
            load8<8>(blk + 16 + (e % 32), wh);
            const int hbit = e / 32;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int qv = ((byte_at(wq, i) >> shift) & 0x0F) | (((byte_at(wh, i) >> hbit) & 1) << 4);
                v[i] = dl * u2f(qv) - ml;
            }
        }
    } else if (T == W_Q6_K) {
        // ql[128]@0, qh[64]@128 (2-bit plane), scales[16]@192 (i8), d@208;
        // groups of 16. In each 128-value half, value w < 64 is the low
        // nibble of ql[64 h + w], value w >= 64 the high nibble of ql[64 h + w - 64].
        const float dl = ld_half(blk + 208) * (u2f(blk[192 + e / 16] ^ 0x80) - 128.0f);
        const int h = e / 128, w = e % 128;
        u32 wl[2], wh[2];
        load8<2>(blk + 64 * h + (w % 64), wl);  // 210-byte blocks
        load8<2>(blk + 128 + 32 * h + (w % 32), wh);
        const int lshift = w >= 64 ? 4 : 0;
        const int hshift = 2 * (w / 32);
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const int qv = ((byte_at(wl, i) >> lshift) & 0x0F) | (((byte_at(wh, i) >> hshift) & 3) << 4);
            v[i] = dl * (u2f(qv) - 32.0f);
        }
    }
}

// out[r] = table[tokens[r]] * scale, one thread per chunk.
template <int T>
__device__ __forceinline__ void embed_body(const u8* table, u64 row_bytes, int n_in,
                                           const u32* tokens, float scale, float* out) {
    pdl_wait_then_trigger();
    const int r = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c * 8 >= n_in) return;
    float v[8];
    dequant8<T>(table + (u64)tokens[r] * row_bytes, c, n_in, v);
    float* dst = out + (u64)r * n_in + c * 8;
#pragma unroll
    for (int i = 0; i < 8; i++) {
        if (c * 8 + i < n_in) dst[i] = scale == 1.0f ? v[i] : v[i] * scale;
    }
}

#define SMELT_EMBED_KERNEL(NAME, T)                                                          \
    extern "C" __global__ void embed_##NAME(const u8* table, u64 rb, int n_in,               \
                                            const u32* tokens, float scale, float* out) {    \
        embed_body<T>(table, rb, n_in, tokens, scale, out);                                  \
    }

SMELT_EMBED_KERNEL(f32, W_F32)
SMELT_EMBED_KERNEL(f16, W_F16)
SMELT_EMBED_KERNEL(bf16, W_BF16)
SMELT_EMBED_KERNEL(q4_0, W_Q4_0)
SMELT_EMBED_KERNEL(q4_1, W_Q4_1)
SMELT_EMBED_KERNEL(q5_0, W_Q5_0)
SMELT_EMBED_KERNEL(q5_1, W_Q5_1)
SMELT_EMBED_KERNEL(q8_0, W_Q8_0)
SMELT_EMBED_KERNEL(q2_k, W_Q2_K)
SMELT_EMBED_KERNEL(q3_k, W_Q3_K)
SMELT_EMBED_KERNEL(q4_k, W_Q4_K)
SMELT_EMBED_KERNEL(q5_k, W_Q5_K)
SMELT_EMBED_KERNEL(q6_k, W_Q6_K)
