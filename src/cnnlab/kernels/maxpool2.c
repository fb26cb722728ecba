/* 2×2 max pooling with stride 2 over channels-last (NHWC) tensors, ReLU optionally fused.

   Forward writes the pooled values and, per output element, which of the four inputs
   won (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; 4 when the fused ReLU
   zeroed the output). Ties go to the first in that order, as torch's max_pool2d does.
   Backward routes each output gradient to the winning input and writes zeros elsewhere,
   so the whole input gradient is written in one pass.

   Values are compared as integer keys: an IEEE sign-magnitude pattern with its magnitude
   bits flipped when negative orders as the float does. The keys of non-negative values
   are the values' own bits, and the map is its own inverse.

   Built by cnnlab/kernels/native.py with -march=native; needs AVX-512 BW and VL. */
#include <stdint.h>
#include <immintrin.h>

#if !defined(__AVX512BW__) || !defined(__AVX512VL__)
#error "this kernel needs AVX-512 BW and VL"
#endif

static inline __m512i key16(__m512i v) {
  return _mm512_xor_si512(v, _mm512_and_si512(_mm512_srai_epi16(v, 15), _mm512_set1_epi16(0x7FFF)));
}
static inline __m512i key32(__m512i v) {
  return _mm512_xor_si512(v, _mm512_and_si512(_mm512_srai_epi32(v, 31), _mm512_set1_epi32(0x7FFFFFFF)));
}
static inline __mmask32 tail32(long left) { return left >= 32 ? 0xFFFFFFFFu : (((__mmask32)1 << left) - 1); }
static inline __mmask16 tail16(long left) { return left >= 16 ? 0xFFFF : (__mmask16)(((uint32_t)1 << left) - 1); }

/* Offsets of output (n, i, j) and of its top-left input, in elements. */
#define OUT_AT(n, i, j) ((((n) * h + (i)) * w + (j)) * C)
#define IN_AT(n, i, j) ((((n) * H + 2 * (i)) * W + 2 * (j)) * C)

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
