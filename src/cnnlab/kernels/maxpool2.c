/* 2×2 max pooling with stride 2 over channels-last (NHWC) tensors, ReLU optionally fused.

   Forward writes the pooled values and, per output element, which of the four inputs
   won (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; 4 when the fused ReLU
   zeroed the output). Ties go to the first in that order, as torch's max_pool2d does.
   Backward routes each output gradient to the winning input and writes zeros elsewhere,
   so the whole input gradient is written in one pass.

   Values are compared as integer keys: an IEEE sign-magnitude pattern with its magnitude
   bits flipped when negative orders as the float does. The keys of non-negative values
   are the values' own bits, and the map is its own inverse.

   Built by cnnlab/kernels/native.py with -march=native: AVX-512 (BW, VL) where the CPU has
   it, else AVX2. */
#include <stdint.h>
#include <immintrin.h>

/* Offsets of output (n, i, j) and of its top-left input, in elements. */
#define OUT_AT(n, i, j) ((((n) * h + (i)) * w + (j)) * C)
#define IN_AT(n, i, j) ((((n) * H + 2 * (i)) * W + 2 * (j)) * C)

#if defined(__AVX512BW__) && defined(__AVX512VL__)
/* Channels the vector code handles at once in bf16; any channel count is fast. */
int pool2_block_bf16(void) { return 1; }

static inline __m512i key16(__m512i v) {
  return _mm512_xor_si512(v, _mm512_and_si512(_mm512_srai_epi16(v, 15), _mm512_set1_epi16(0x7FFF)));
}
static inline __m512i key32(__m512i v) {
  return _mm512_xor_si512(v, _mm512_and_si512(_mm512_srai_epi32(v, 31), _mm512_set1_epi32(0x7FFFFFFF)));
}
static inline __mmask32 tail32(long left) { return left >= 32 ? 0xFFFFFFFFu : (((__mmask32)1 << left) - 1); }
static inline __mmask16 tail16(long left) { return left >= 16 ? 0xFFFF : (__mmask16)(((uint32_t)1 << left) - 1); }

void pool2_forward_bf16(const uint16_t *x, uint16_t *y, uint8_t *arg,
                        long N, long H, long W, long C, int relu) {
  const long h = H / 2, w = W / 2, row = W * C;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++)
        for (long k = 0; k < C; k += 32) {
          const __mmask32 t = tail32(C - k);
          const uint16_t *a = x + IN_AT(n, i, j) + k;
          __m512i ka = key16(_mm512_maskz_loadu_epi16(t, a));
          __m512i kb = key16(_mm512_maskz_loadu_epi16(t, a + C));
          __m512i kc = key16(_mm512_maskz_loadu_epi16(t, a + row));
          __m512i kd = key16(_mm512_maskz_loadu_epi16(t, a + row + C));
          __mmask32 top = _mm512_cmpgt_epi16_mask(kb, ka), bottom = _mm512_cmpgt_epi16_mask(kd, kc);
          __m512i m0 = _mm512_mask_blend_epi16(top, ka, kb), m1 = _mm512_mask_blend_epi16(bottom, kc, kd);
          __mmask32 down = _mm512_cmpgt_epi16_mask(m1, m0);
          __m512i m = _mm512_mask_blend_epi16(down, m0, m1);
          __m256i p = _mm256_mask_blend_epi8(down, _mm256_maskz_mov_epi8(top, _mm256_set1_epi8(1)),
                                             _mm256_mask_blend_epi8(bottom, _mm256_set1_epi8(2), _mm256_set1_epi8(3)));
          __m512i v;
          if (relu) {
            __mmask32 on = _mm512_cmpgt_epi16_mask(m, _mm512_setzero_si512());
            v = _mm512_maskz_mov_epi16(on, m);
            p = _mm256_mask_blend_epi8(on, _mm256_set1_epi8(4), p);
          } else {
            v = key16(m);
          }
          _mm512_mask_storeu_epi16(y + OUT_AT(n, i, j) + k, t, v);
          _mm256_mask_storeu_epi8(arg + OUT_AT(n, i, j) + k, t, p);
        }
}

void pool2_backward_bf16(const uint16_t *g, const uint8_t *arg, uint16_t *gx,
                         long N, long H, long W, long C) {
  const long h = H / 2, w = W / 2, row = W * C;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++)
        for (long k = 0; k < C; k += 32) {
          const __mmask32 t = tail32(C - k);
          __m512i v = _mm512_maskz_loadu_epi16(t, g + OUT_AT(n, i, j) + k);
          __m256i p = _mm256_maskz_loadu_epi8(t, arg + OUT_AT(n, i, j) + k);
          uint16_t *a = gx + IN_AT(n, i, j) + k;
          uint16_t *dst[4] = {a, a + C, a + row, a + row + C};
          for (int q = 0; q < 4; q++) {
            __mmask32 hit = _mm256_cmpeq_epi8_mask(p, _mm256_set1_epi8((char)q));
            _mm512_mask_storeu_epi16(dst[q], t, _mm512_maskz_mov_epi16(hit, v));
          }
        }
}

void pool2_forward_f32(const uint32_t *x, uint32_t *y, uint8_t *arg,
                       long N, long H, long W, long C, int relu) {
  const long h = H / 2, w = W / 2, row = W * C;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++)
        for (long k = 0; k < C; k += 16) {
          const __mmask16 t = tail16(C - k);
          const uint32_t *a = x + IN_AT(n, i, j) + k;
          __m512i ka = key32(_mm512_maskz_loadu_epi32(t, a));
          __m512i kb = key32(_mm512_maskz_loadu_epi32(t, a + C));
          __m512i kc = key32(_mm512_maskz_loadu_epi32(t, a + row));
          __m512i kd = key32(_mm512_maskz_loadu_epi32(t, a + row + C));
          __mmask16 top = _mm512_cmpgt_epi32_mask(kb, ka), bottom = _mm512_cmpgt_epi32_mask(kd, kc);
          __m512i m0 = _mm512_mask_blend_epi32(top, ka, kb), m1 = _mm512_mask_blend_epi32(bottom, kc, kd);
          __mmask16 down = _mm512_cmpgt_epi32_mask(m1, m0);
          __m512i m = _mm512_mask_blend_epi32(down, m0, m1);
          __m128i p = _mm_mask_blend_epi8(down, _mm_maskz_mov_epi8(top, _mm_set1_epi8(1)),
                                          _mm_mask_blend_epi8(bottom, _mm_set1_epi8(2), _mm_set1_epi8(3)));
          __m512i v;
          if (relu) {
            __mmask16 on = _mm512_cmpgt_epi32_mask(m, _mm512_setzero_si512());
            v = _mm512_maskz_mov_epi32(on, m);
            p = _mm_mask_blend_epi8(on, _mm_set1_epi8(4), p);
          } else {
            v = key32(m);
          }
          _mm512_mask_storeu_epi32(y + OUT_AT(n, i, j) + k, t, v);
          _mm_mask_storeu_epi8(arg + OUT_AT(n, i, j) + k, t, p);
        }
}

void pool2_backward_f32(const uint32_t *g, const uint8_t *arg, uint32_t *gx,
                        long N, long H, long W, long C) {
  const long h = H / 2, w = W / 2, row = W * C;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++)
        for (long k = 0; k < C; k += 16) {
          const __mmask16 t = tail16(C - k);
          __m512i v = _mm512_maskz_loadu_epi32(t, g + OUT_AT(n, i, j) + k);
          __m128i p = _mm_maskz_loadu_epi8(t, arg + OUT_AT(n, i, j) + k);
          uint32_t *a = gx + IN_AT(n, i, j) + k;
          uint32_t *dst[4] = {a, a + C, a + row, a + row + C};
          for (int q = 0; q < 4; q++) {
            __mmask16 hit = _mm_cmpeq_epi8_mask(p, _mm_set1_epi8((char)q));
            _mm512_mask_storeu_epi32(dst[q], t, _mm512_maskz_mov_epi32(hit, v));
          }
        }
}

#elif defined(__AVX2__)
/* AVX2: full 256-bit blocks of channels, then the remaining channels one by one, which
   is slower than torch; cnnlab/kernels/pooling.py therefore sends only channel counts
   that are a multiple of pool2_block_bf16() (16; 8 for fp32) here. */
int pool2_block_bf16(void) { return 16; }

static inline __m256i key16(__m256i v) {
  return _mm256_xor_si256(v, _mm256_and_si256(_mm256_srai_epi16(v, 15), _mm256_set1_epi16(0x7FFF)));
}
static inline __m256i key32(__m256i v) {
  return _mm256_xor_si256(v, _mm256_and_si256(_mm256_srai_epi32(v, 31), _mm256_set1_epi32(0x7FFFFFFF)));
}
static inline int16_t skey16(uint16_t b) { int16_t s = (int16_t)b; return (int16_t)(s ^ ((s >> 15) & 0x7FFF)); }
static inline int32_t skey32(uint32_t b) { int32_t s = (int32_t)b; return s ^ ((s >> 31) & 0x7FFFFFFF); }

/* One channel, scalar: the same comparisons as the vector code. */
#define POOL_ONE(KEY, T, KT)                                                     \
  do {                                                                         \
    KT ka = KEY(a[0]), kb = KEY(a[C]), kc = KEY(a[row]), kd = KEY(a[row + C]); \
    int top = kb > ka, bottom = kd > kc;                                       \
    KT m0 = top ? kb : ka, m1 = bottom ? kd : kc;                              \
    int down = m1 > m0;                                                        \
    KT m = down ? m1 : m0;                                                     \
    uint8_t p = down ? (uint8_t)(2 + bottom) : (uint8_t)top;                   \
    if (relu && m <= 0) { *yo = 0; *ao = 4; }                                  \
    else { *yo = (T)(relu ? m : KEY((T)m)); *ao = p; }                         \
  } while (0)

void pool2_forward_bf16(const uint16_t *x, uint16_t *y, uint8_t *arg,
                        long N, long H, long W, long C, int relu) {
  const long h = H / 2, w = W / 2, row = W * C;
  const __m256i one = _mm256_set1_epi16(1), two = _mm256_set1_epi16(2), four = _mm256_set1_epi16(4);
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++) {
        long k = 0;
        for (; k + 16 <= C; k += 16) {
          const uint16_t *a = x + IN_AT(n, i, j) + k;
          __m256i ka = key16(_mm256_loadu_si256((const __m256i *)a));
          __m256i kb = key16(_mm256_loadu_si256((const __m256i *)(a + C)));
          __m256i kc = key16(_mm256_loadu_si256((const __m256i *)(a + row)));
          __m256i kd = key16(_mm256_loadu_si256((const __m256i *)(a + row + C)));
          __m256i top = _mm256_cmpgt_epi16(kb, ka), bottom = _mm256_cmpgt_epi16(kd, kc);
          __m256i m0 = _mm256_blendv_epi8(ka, kb, top), m1 = _mm256_blendv_epi8(kc, kd, bottom);
          __m256i down = _mm256_cmpgt_epi16(m1, m0);
          __m256i m = _mm256_blendv_epi8(m0, m1, down);
          __m256i p = _mm256_blendv_epi8(_mm256_and_si256(top, one),
                                         _mm256_sub_epi16(two, bottom), down); /* 2 - (-1) = 3 */
          __m256i v;
          if (relu) {
            __m256i on = _mm256_cmpgt_epi16(m, _mm256_setzero_si256());
            v = _mm256_and_si256(on, m);
            p = _mm256_blendv_epi8(four, p, on);
          } else {
            v = key16(m);
          }
          _mm256_storeu_si256((__m256i *)(y + OUT_AT(n, i, j) + k), v);
          __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
          _mm_storeu_si128((__m128i *)(arg + OUT_AT(n, i, j) + k), bytes);
        }
        for (; k < C; k++) {
          const uint16_t *a = x + IN_AT(n, i, j) + k;
          uint16_t *yo = y + OUT_AT(n, i, j) + k;
          uint8_t *ao = arg + OUT_AT(n, i, j) + k;
          POOL_ONE(skey16, uint16_t, int16_t);
        }
      }
}

void pool2_forward_f32(const uint32_t *x, uint32_t *y, uint8_t *arg,
                       long N, long H, long W, long C, int relu) {
  const long h = H / 2, w = W / 2, row = W * C;
  const __m256i one = _mm256_set1_epi32(1), two = _mm256_set1_epi32(2), four = _mm256_set1_epi32(4);
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++) {
        long k = 0;
        for (; k + 8 <= C; k += 8) {
          const uint32_t *a = x + IN_AT(n, i, j) + k;
          __m256i ka = key32(_mm256_loadu_si256((const __m256i *)a));
          __m256i kb = key32(_mm256_loadu_si256((const __m256i *)(a + C)));
          __m256i kc = key32(_mm256_loadu_si256((const __m256i *)(a + row)));
          __m256i kd = key32(_mm256_loadu_si256((const __m256i *)(a + row + C)));
          __m256i top = _mm256_cmpgt_epi32(kb, ka), bottom = _mm256_cmpgt_epi32(kd, kc);
          __m256i m0 = _mm256_blendv_epi8(ka, kb, top), m1 = _mm256_blendv_epi8(kc, kd, bottom);
          __m256i down = _mm256_cmpgt_epi32(m1, m0);
          __m256i m = _mm256_blendv_epi8(m0, m1, down);
          __m256i p = _mm256_blendv_epi8(_mm256_and_si256(top, one), _mm256_sub_epi32(two, bottom), down);
          __m256i v;
          if (relu) {
            __m256i on = _mm256_cmpgt_epi32(m, _mm256_setzero_si256());
            v = _mm256_and_si256(on, m);
            p = _mm256_blendv_epi8(four, p, on);
          } else {
            v = key32(m);
          }
          _mm256_storeu_si256((__m256i *)(y + OUT_AT(n, i, j) + k), v);
          __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
          _mm_storel_epi64((__m128i *)(arg + OUT_AT(n, i, j) + k), _mm_packus_epi16(w16, w16));
        }
        for (; k < C; k++) {
          const uint32_t *a = x + IN_AT(n, i, j) + k;
          uint32_t *yo = y + OUT_AT(n, i, j) + k;
          uint8_t *ao = arg + OUT_AT(n, i, j) + k;
          POOL_ONE(skey32, uint32_t, int32_t);
        }
      }
}

void pool2_backward_bf16(const uint16_t *g, const uint8_t *arg, uint16_t *gx,
                         long N, long H, long W, long C) {
  const long h = H / 2, w = W / 2, row = W * C;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++) {
        const uint16_t *v = g + OUT_AT(n, i, j);
        const uint8_t *p = arg + OUT_AT(n, i, j);
        uint16_t *a = gx + IN_AT(n, i, j);
        uint16_t *dst[4] = {a, a + C, a + row, a + row + C};
        long k = 0;
        for (; k + 16 <= C; k += 16) {
          __m256i vv = _mm256_loadu_si256((const __m256i *)(v + k));
          __m256i pp = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(p + k)));
          for (int q = 0; q < 4; q++)
            _mm256_storeu_si256((__m256i *)(dst[q] + k),
                                _mm256_and_si256(_mm256_cmpeq_epi16(pp, _mm256_set1_epi16((short)q)), vv));
        }
        for (; k < C; k++)
          for (int q = 0; q < 4; q++) dst[q][k] = p[k] == q ? v[k] : 0;
      }
}

void pool2_backward_f32(const uint32_t *g, const uint8_t *arg, uint32_t *gx,
                        long N, long H, long W, long C) {
  const long h = H / 2, w = W / 2, row = W * C;
  for (long n = 0; n < N; n++)
    for (long i = 0; i < h; i++)
      for (long j = 0; j < w; j++) {
        const uint32_t *v = g + OUT_AT(n, i, j);
        const uint8_t *p = arg + OUT_AT(n, i, j);
        uint32_t *a = gx + IN_AT(n, i, j);
        uint32_t *dst[4] = {a, a + C, a + row, a + row + C};
        long k = 0;
        for (; k + 8 <= C; k += 8) {
          __m256i vv = _mm256_loadu_si256((const __m256i *)(v + k));
          __m256i pp = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p + k)));
          for (int q = 0; q < 4; q++)
            _mm256_storeu_si256((__m256i *)(dst[q] + k),
                                _mm256_and_si256(_mm256_cmpeq_epi32(pp, _mm256_set1_epi32(q)), vv));
        }
        for (; k < C; k++)
          for (int q = 0; q < 4; q++) dst[q][k] = p[k] == q ? v[k] : 0;
      }
}

#else
#error "this kernel needs AVX-512 (BW, VL) or AVX2"
#endif
