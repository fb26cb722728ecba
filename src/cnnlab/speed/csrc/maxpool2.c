/* 2×2 max pooling with stride 2 over channels-last (NHWC) tensors, ReLU optionally fused.

   Forward writes the pooled values and, per output element, which of the four inputs
   won (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right; 4 when the fused ReLU
   zeroed the output). Ties go to the first in that order, as torch's max_pool2d does.
   Backward routes each output gradient to the winning input and writes zeros elsewhere,
   so the whole input gradient is written in one pass.

   Values are compared as integer keys: an IEEE sign-magnitude pattern with its magnitude
   bits flipped when negative orders as the float does. The keys of non-negative values
   are the values' own bits, and the map is its own inverse.

   Built by cnnlab/speed/native.py with -march=native: AVX-512 (BW, VL) where the CPU has
   it, else AVX2.

   The bf16 and fp32 versions differ only in the width of every intrinsic, so each
   function is written once, in maxpool2_body.h, and instantiated per dtype: below, each
   build defines a short table of names (the element type, the lanes in a vector, the
   load, store, compare and blend intrinsics of that width) and includes the body, once
   for bf16 and once for fp32. maxpool2_body.h lists the names. */
#include <stdint.h>
#include <immintrin.h>

/* The loops of every function here: each output (n, i, j) of the N×h×w outputs in turn.
   Built with OpenMP (see conv1.c), the images are shared among torch's threads when
   there are enough of them to pay for waking a thread. */
#define FOR_EACH_OUTPUT                                                        \
  _Pragma("omp parallel for schedule(static) if (N * H * W * C >= 65536)")     \
  for (long n = 0; n < N; n++)                                                 \
    for (long i = 0; i < h; i++)                                               \
      for (long j = 0; j < w; j++)

/* Offsets of output (n, i, j) and of its top-left input, in elements. */
#define OUT_AT(n, i, j) ((((n) * h + (i)) * w + (j)) * C)
#define IN_AT(n, i, j) ((((n) * H + 2 * (i)) * W + 2 * (j)) * C)

#if defined(__AVX512BW__) && defined(__AVX512VL__)
#define POOL2_AVX512 1
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

/* bf16: 32 lanes of 16 bits, masks of 32 bits; the winners fill a 256-bit vector. */
#define NAME(f) f##_bf16
#define T uint16_t
#define LANES 32
#define KEY key16
#define MASK __mmask32
#define TAIL tail32
#define LOAD _mm512_maskz_loadu_epi16
#define STORE _mm512_mask_storeu_epi16
#define CMPGT _mm512_cmpgt_epi16_mask
#define BLEND _mm512_mask_blend_epi16
#define KEEP _mm512_maskz_mov_epi16
#define BYTES __m256i
#define BYTES_SET1 _mm256_set1_epi8
#define BYTES_BLEND _mm256_mask_blend_epi8
#define BYTES_KEEP _mm256_maskz_mov_epi8
#define BYTES_LOAD _mm256_maskz_loadu_epi8
#define BYTES_STORE _mm256_mask_storeu_epi8
#define BYTES_CMPEQ _mm256_cmpeq_epi8_mask
#include "maxpool2_body.h" /* pool2_forward_bf16, pool2_backward_bf16 */

/* fp32: 16 lanes of 32 bits, masks of 16 bits; the winners fill a 128-bit vector. */
#define NAME(f) f##_f32
#define T uint32_t
#define LANES 16
#define KEY key32
#define MASK __mmask16
#define TAIL tail16
#define LOAD _mm512_maskz_loadu_epi32
#define STORE _mm512_mask_storeu_epi32
#define CMPGT _mm512_cmpgt_epi32_mask
#define BLEND _mm512_mask_blend_epi32
#define KEEP _mm512_maskz_mov_epi32
#define BYTES __m128i
#define BYTES_SET1 _mm_set1_epi8
#define BYTES_BLEND _mm_mask_blend_epi8
#define BYTES_KEEP _mm_maskz_mov_epi8
#define BYTES_LOAD _mm_maskz_loadu_epi8
#define BYTES_STORE _mm_mask_storeu_epi8
#define BYTES_CMPEQ _mm_cmpeq_epi8_mask
#include "maxpool2_body.h" /* pool2_forward_f32, pool2_backward_f32 */

#elif defined(__AVX2__)
#define POOL2_AVX512 0
/* AVX2: full 256-bit blocks of channels, then the remaining channels one by one, which
   is slower than torch; cnnlab/speed/pooling.py therefore sends only channel counts
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

/* The winners, numbers 0 to 4 in each lane, to and from one byte a lane in memory. */
static inline void store_winners16(uint8_t *dst, __m256i p) {
  _mm_storeu_si128((__m128i *)dst, _mm_packus_epi16(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1)));
}
static inline void store_winners32(uint8_t *dst, __m256i p) {
  __m128i w16 = _mm_packus_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
  _mm_storel_epi64((__m128i *)dst, _mm_packus_epi16(w16, w16));
}
static inline __m256i load_winners16(const uint8_t *src) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)src));
}
static inline __m256i load_winners32(const uint8_t *src) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)src));
}

/* bf16: 16 lanes of 16 bits. */
#define NAME(f) f##_bf16
#define T uint16_t
#define LANES 16
#define KEY key16
#define SET1 _mm256_set1_epi16
#define CMPGT _mm256_cmpgt_epi16
#define CMPEQ _mm256_cmpeq_epi16
#define SUB _mm256_sub_epi16
#define STORE_WINNERS store_winners16
#define LOAD_WINNERS load_winners16
#define SKEY skey16
#define SKEY_T int16_t
#include "maxpool2_body.h" /* pool2_forward_bf16, pool2_backward_bf16 */

/* fp32: 8 lanes of 32 bits. */
#define NAME(f) f##_f32
#define T uint32_t
#define LANES 8
#define KEY key32
#define SET1 _mm256_set1_epi32
#define CMPGT _mm256_cmpgt_epi32
#define CMPEQ _mm256_cmpeq_epi32
#define SUB _mm256_sub_epi32
#define STORE_WINNERS store_winners32
#define LOAD_WINNERS load_winners32
#define SKEY skey32
#define SKEY_T int32_t
#include "maxpool2_body.h" /* pool2_forward_f32, pool2_backward_f32 */

#else
#error "this kernel needs AVX-512 (BW, VL) or AVX2"
#endif
