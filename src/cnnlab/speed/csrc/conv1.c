/* Convolution of one-channel images (a network's first layer on greyscale digits),
   stride 1, square K×K kernel, zero padding P, any number of output channels; and the
   same convolution followed by 2×2 max pooling (stride 2), ReLU optionally fused.

   oneDNN, which torch uses for convolutions on the CPU, handles a single input channel
   poorly: on MNIST-sized batches its first layer takes as long as the rest of the
   network. Here each output pixel is a sum of K·K products, done as K·K fused
   multiply-adds of a broadcast input pixel with a vector of up to 16 output channels,
   in fp32, written channels-last (NHWC) in fp32 or bf16 (rounded to nearest even, as
   torch rounds). The backward pass computes the weight and bias gradients only: the
   images of a first layer need none.

   With pooling, each pooled output is the largest of its four convolution outputs,
   compared in fp32; the winner of each output (0 top-left, 1 top-right, 2 bottom-left,
   3 bottom-right; ties to the first, as torch's max_pool2d; 4 when the fused ReLU
   zeroed the output) is kept as one byte, so the backward pass sends each gradient to
   the one convolution output it came from. The full-size convolution output is never
   written, and no separate pooling pass reads it back.

   x      N×H×W fp32 images (the one channel)
   w      Co×K×K fp32 weights, b Co fp32 bias or NULL
   y      N×Ho×Wo×Co output, Ho = H + 2P - K + 1, Wo = W + 2P - K + 1; with pooling
          N×(Ho/2)×(Wo/2)×Co, and arg the winners, the same shape in bytes
   g      the gradient of y; gw Co×K×K and gb Co (or NULL) are overwritten

   Each function returns 0; -1 when it could not allocate its scratch memory, -2 for a
   kernel larger than 11×11 in the AVX-512 code.

   Built by cnnlab/speed/native.py with -march=native: AVX-512 (BW, VL) where the CPU
   has it, else plain C that the compiler vectorises over the channels.

   Each pass is written once for both dtypes, pooled or not: forward() and backward()
   take the flags `bf16` (how y is stored and g loaded) and `pool`, and the exported
   functions at the end set them. In the AVX-512 code VARIANT compiles the per-image
   functions with the flags and the kernel size fixed, so they cost nothing in the inner
   loops. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Copy image n into a zero-bordered (H+2P)×(W+2P) buffer, so the loops need no tests. */
static void pad_image(const float *x, float *buf, long H, long W, long P) {
  const long Wp = W + 2 * P;
  memset(buf, 0, sizeof(float) * (H + 2 * P) * Wp);
  for (long i = 0; i < H; i++) memcpy(buf + (i + P) * Wp + P, x + i * W, sizeof(float) * W);
}

/* Threads: with OpenMP (cnnlab/speed/native.py builds with -fopenmp where the compiler
   has it), the images of a batch are shared among the threads of the OpenMP runtime
   already loaded, which is torch's own, so they take turns with torch's operators
   instead of competing with them for the cores. */
#ifdef _OPENMP
#include <omp.h>
static long thread_index(void) { return omp_get_thread_num(); }
static long thread_count(void) { return omp_get_num_threads(); }
static long max_threads(void) { return omp_get_max_threads(); }
#else
static inline long thread_index(void) { return 0; }
static inline long thread_count(void) { return 1; }
static inline long max_threads(void) { return 1; }
#endif

/* Output geometry shared by both builds. */
typedef struct {
  long N, H, W, K, P, Co, Wp, Ho, Wo, h, w;
} shape;

static shape make_shape(long N, long H, long W, long K, long P, long Co) {
  shape s = {N, H, W, K, P, Co, W + 2 * P, H + 2 * P - K + 1, W + 2 * P - K + 1, 0, 0};
  s.h = s.Ho / 2;
  s.w = s.Wo / 2;
  return s;
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define MAXK 11

ALWAYS_INLINE __mmask16 lanes(long left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1); }

/* fp32 to bf16, round to nearest even; NaN stays a (quiet) NaN. */
#if defined(__AVX512BF16__)
ALWAYS_INLINE __m256i to_bf16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
#else
ALWAYS_INLINE __m256i to_bf16(__m512 v) {
  __m512i bits = _mm512_castps_si512(v);
  __m512i odd = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF)));
  __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  rounded = _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x400000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
}
#endif

ALWAYS_INLINE __m512 load(const void *g, int bf16, long at, __mmask16 t) {
  if (!bf16) return _mm512_maskz_loadu_ps(t, (const float *)g + at);
  __m256i h = _mm256_maskz_loadu_epi16(t, (const uint16_t *)g + at);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

ALWAYS_INLINE void store(void *y, int bf16, long at, __mmask16 t, __m512 v) {
  if (bf16) _mm256_mask_storeu_epi16((uint16_t *)y + at, t, to_bf16(v));
  else _mm512_mask_storeu_ps((float *)y + at, t, v);
}

/* The weights of channels c0… laid out tap-major: wt[tap] holds up to 16 channels. */
static void gather_weights(const float *w, long KK, long c0, __mmask16 t, __m512 *wt) {
  const __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32((int)KK));
  for (long q = 0; q < KK; q++)
    wt[q] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), t, idx, w + c0 * KK + q, 4);
}

/* The convolution at PX output pixels whose top-left inputs are src + off[p]: PX
   independent accumulators keep the FMA units busy. */
ALWAYS_INLINE void convolve(const float *src, const long *off, long Wp, const __m512 *wt,
                            __m512 bias, long K, int PX, __m512 *acc) {
  for (int p = 0; p < PX; p++) acc[p] = bias;
#pragma GCC unroll 16
  for (long di = 0; di < K; di++)
#pragma GCC unroll 16
    for (long dj = 0; dj < K; dj++) {
      const __m512 wv = wt[di * K + dj];
      const float *s = src + di * Wp + dj;
      for (int p = 0; p < PX; p++) acc[p] = _mm512_fmadd_ps(_mm512_set1_ps(s[off[p]]), wv, acc[p]);
    }
}

/* Max of four in the order top-left, top-right, bottom-left, bottom-right (ties to the
   first), with the winner's number per lane; ReLU makes non-positive maxima 0 / 4. */
ALWAYS_INLINE __m512 pool4(const __m512 *v, int relu, __m128i *winner) {
  const __mmask16 top = _mm512_cmp_ps_mask(v[1], v[0], _CMP_GT_OQ);
  const __mmask16 bottom = _mm512_cmp_ps_mask(v[3], v[2], _CMP_GT_OQ);
  const __m512 m0 = _mm512_mask_blend_ps(top, v[0], v[1]), m1 = _mm512_mask_blend_ps(bottom, v[2], v[3]);
  const __mmask16 down = _mm512_cmp_ps_mask(m1, m0, _CMP_GT_OQ);
  __m512 m = _mm512_mask_blend_ps(down, m0, m1);
  __m128i p = _mm_mask_blend_epi8(down, _mm_maskz_mov_epi8(top, _mm_set1_epi8(1)),
                                  _mm_mask_blend_epi8(bottom, _mm_set1_epi8(2), _mm_set1_epi8(3)));
  if (relu) {
    const __mmask16 on = _mm512_cmp_ps_mask(m, _mm512_setzero_ps(), _CMP_GT_OQ);
    m = _mm512_maskz_mov_ps(on, m);
    p = _mm_mask_blend_epi8(on, _mm_set1_epi8(4), p);
  }
  *winner = p;
  return m;
}

/* One padded image, all channels, forward. wt is scratch for K·K vectors. */
ALWAYS_INLINE void forward_image(const float *buf, const float *w, const float *b, void *y,
                                 uint8_t *arg, int bf16, int pool, int relu, long n,
                                 const shape *s, long K, __m512 *wt) {
  const long Wp = s->Wp, Co = s->Co;
  for (long c0 = 0; c0 < Co; c0 += 16) {
    const __mmask16 t = lanes(Co - c0);
    __m512 acc[8];
    gather_weights(w, K * K, c0, t, wt);
    const __m512 bias = b ? _mm512_maskz_loadu_ps(t, b + c0) : _mm512_setzero_ps();
    if (!pool) {
      static const long row[8] = {0, 1, 2, 3, 4, 5, 6, 7};
      for (long i = 0; i < s->Ho; i++) {
        const long at = (n * s->Ho + i) * s->Wo * Co + c0;
        long j = 0;
        for (; j + 8 <= s->Wo; j += 8) {
          convolve(buf + i * Wp + j, row, Wp, wt, bias, K, 8, acc);
          for (int p = 0; p < 8; p++) store(y, bf16, at + (j + p) * Co, t, acc[p]);
        }
        for (; j < s->Wo; j++) {
          convolve(buf + i * Wp + j, row, Wp, wt, bias, K, 1, acc);
          store(y, bf16, at + j * Co, t, acc[0]);
        }
      }
      continue;
    }
    /* Two pooled outputs at a time: eight convolution outputs in flight. */
    const long quad[8] = {0, 1, Wp, Wp + 1, 2, 3, Wp + 2, Wp + 3};
    for (long i = 0; i < s->h; i++) {
      const long at = (n * s->h + i) * s->w * Co + c0;
      for (long j = 0; j < s->w; j += 2) {
        const int pairs = j + 2 <= s->w ? 2 : 1;
        __m128i win;
        if (pairs == 2) convolve(buf + 2 * i * Wp + 2 * j, quad, Wp, wt, bias, K, 8, acc);
        else convolve(buf + 2 * i * Wp + 2 * j, quad, Wp, wt, bias, K, 4, acc);
        for (int p = 0; p < pairs; p++) {
          const __m512 m = pool4(acc + 4 * p, relu, &win);
          store(y, bf16, at + (j + p) * Co, t, m);
          _mm_mask_storeu_epi8(arg + at + (j + p) * Co, t, win);
        }
      }
    }
  }
}

/* One convolution output's gradient gv, added to the bias gradient acc[K·K] and, times
   the input pixel under each tap (src is the one under the top-left tap), to the weight
   gradients acc[0..K·K). */
ALWAYS_INLINE void add_gradient(const float *src, long Wp, __m512 gv, long K, __m512 *acc) {
  acc[K * K] = _mm512_add_ps(acc[K * K], gv);
#pragma GCC unroll 16
  for (long di = 0; di < K; di++)
#pragma GCC unroll 16
    for (long dj = 0; dj < K; dj++)
      acc[di * K + dj] = _mm512_fmadd_ps(_mm512_set1_ps(src[di * Wp + dj]), gv, acc[di * K + dj]);
}

/* One padded image's weight and bias gradients for channels c0…, added to tw[0..K·K]
   (bias last). acc is scratch for K·K + 1 vectors; where K is a constant the compiler
   keeps them all in registers, one fused multiply-add per tap and pixel. With pooling,
   each pooled gradient goes to its winner's taps. */
ALWAYS_INLINE void backward_image(const float *buf, const void *g, const uint8_t *arg, int bf16,
                                  int pool, long n, const shape *s, long c0, __mmask16 t,
                                  long K, __m512 *acc, __m512 *tw) {
  const long KK = K * K, Wp = s->Wp, Co = s->Co;
#pragma GCC unroll 32
  for (long q = 0; q <= KK; q++) acc[q] = _mm512_setzero_ps();
  const long rows = pool ? s->h : s->Ho, cols = pool ? s->w : s->Wo;
  for (long i = 0; i < rows; i++)
    for (long j = 0; j < cols; j++) {
      const long at = ((n * rows + i) * cols + j) * Co + c0;
      const __m512 gv = load(g, bf16, at, t);
      if (!pool) {
        add_gradient(buf + i * Wp + j, Wp, gv, K, acc);
        continue;
      }
      const __m128i win = _mm_maskz_loadu_epi8(t, arg + at);
      for (int q = 0; q < 4; q++) {
        const __m512 gq = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(win, _mm_set1_epi8((char)q)), gv);
        add_gradient(buf + (2 * i + (q >> 1)) * Wp + 2 * j + (q & 1), Wp, gq, K, acc);
      }
    }
#pragma GCC unroll 32
  for (long q = 0; q <= KK; q++) tw[q] = _mm512_add_ps(tw[q], acc[q]);
}

/* Variants with the kernel size, dtype and pooling fixed at compile time (3×3 and 5×5
   are the tutorials'), and ones for any size up to MAXK. */
#define VARIANT(KC, BF16, POOL, SUFFIX)                                                       \
  static void forward_##SUFFIX(const float *buf, const float *w, const float *b, void *y,   \
                               uint8_t *arg, int relu, long n, const shape *s) {            \
    __m512 wt[KC * KC];                                                                     \
    forward_image(buf, w, b, y, arg, BF16, POOL, relu, n, s, KC == MAXK ? s->K : KC, wt);   \
  }                                                                                         \
  static void backward_##SUFFIX(const float *buf, const void *g, const uint8_t *arg, long n, \
                                const shape *s, long c0, __mmask16 t, __m512 *tw) {         \
    __m512 acc[KC * KC + 1];                                                                \
    backward_image(buf, g, arg, BF16, POOL, n, s, c0, t, KC == MAXK ? s->K : KC, acc, tw);  \
  }
#define VARIANTS(KC, NAME)                \
  VARIANT(KC, 0, 0, NAME##_f32)           \
  VARIANT(KC, 1, 0, NAME##_bf16)          \
  VARIANT(KC, 0, 1, NAME##_pool_f32)      \
  VARIANT(KC, 1, 1, NAME##_pool_bf16)
VARIANTS(3, k3)
VARIANTS(5, k5)
VARIANTS(MAXK, any)

typedef void (*forward_fn)(const float *, const float *, const float *, void *, uint8_t *, int,
                           long, const shape *);
typedef void (*backward_fn)(const float *, const void *, const uint8_t *, long, const shape *,
                            long, __mmask16, __m512 *);

#define PICK(PREFIX, K, BF16, POOL)                                                        \
  ((K) == 3 ? PICK_DT(PREFIX##_k3, BF16, POOL) : (K) == 5 ? PICK_DT(PREFIX##_k5, BF16, POOL) \
                                                          : PICK_DT(PREFIX##_any, BF16, POOL))
#define PICK_DT(NAME, BF16, POOL) \
  ((POOL) ? ((BF16) ? NAME##_pool_bf16 : NAME##_pool_f32) : ((BF16) ? NAME##_bf16 : NAME##_f32))

static int forward(const float *x, const float *w, const float *b, void *y, uint8_t *arg,
                   int bf16, int pool, int relu, shape s) {
  const forward_fn image = PICK(forward, s.K, bf16, pool);
  int failed = 0;
  if (s.K > MAXK) return -2;
#pragma omp parallel if (s.N > 1)
  {
    const long first = s.N * thread_index() / thread_count(), end = s.N * (thread_index() + 1) / thread_count();
    float *buf = malloc(sizeof(float) * (s.H + 2 * s.P) * s.Wp);
    if (!buf) failed = 1;
    for (long n = first; buf && n < end; n++) {
      pad_image(x + n * s.H * s.W, buf, s.H, s.W, s.P);
      image(buf, w, b, y, arg, relu, n, &s);
    }
    free(buf);
  }
  return failed ? -1 : 0;
}

/* Each thread sums the gradients of its share of the images; the shares are then
   added in thread order, so a given thread count always gives the same result. */
static int backward(const float *x, const void *g, const uint8_t *arg, int bf16, int pool,
                    float *gw, float *gb, shape s) {
  const long KK = s.K * s.K, chunks = (s.Co + 15) / 16, per = (KK + 1) * chunks;
  const backward_fn image = PICK(backward, s.K, bf16, pool);
  const long most = s.N > 1 ? max_threads() : 1;
  long team = 1;
  int failed = 0;
  if (s.K > MAXK) return -2;
  __m512 *total = aligned_alloc(64, sizeof(__m512) * per * most);
  if (!total) return -1;
  for (long q = 0; q < per * most; q++) total[q] = _mm512_setzero_ps();
#pragma omp parallel if (s.N > 1) num_threads(most)
  {
    const long t = thread_index(), nt = thread_count();
    const long first = s.N * t / nt, end = s.N * (t + 1) / nt;
    float *buf = malloc(sizeof(float) * (s.H + 2 * s.P) * s.Wp);
    if (t == 0) team = nt;
    if (!buf) failed = 1;
    for (long n = first; buf && n < end; n++) {
      pad_image(x + n * s.H * s.W, buf, s.H, s.W, s.P);
      for (long c0 = 0; c0 < s.Co; c0 += 16)
        image(buf, g, arg, n, &s, c0, lanes(s.Co - c0), total + t * per + (c0 / 16) * (KK + 1));
    }
    free(buf);
  }
  for (long t = 1; t < team; t++)
    for (long q = 0; q < per; q++) total[q] = _mm512_add_ps(total[q], total[t * per + q]);
  for (long c0 = 0; c0 < s.Co; c0 += 16) {
    const __m512 *tw = total + (c0 / 16) * (KK + 1);
    float lane[16];
    for (long q = 0; q < KK; q++) {
      _mm512_storeu_ps(lane, tw[q]);
      for (long c = c0; c < s.Co && c < c0 + 16; c++) gw[c * KK + q] = lane[c - c0];
    }
    if (gb) _mm512_mask_storeu_ps(gb + c0, lanes(s.Co - c0), tw[KK]);
  }
  free(total);
  return failed ? -1 : 0;
}

#else /* plain C: the channel loops are what the compiler vectorises */

static uint16_t to_bf16(float f) {
  uint32_t bits;
  memcpy(&bits, &f, 4);
  if (f != f) return (uint16_t)((bits >> 16) | 0x40);
  return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* acc[c] = bias + the convolution at padded position (i, j), every channel. */
static void convolve(const float *buf, const float *wt, const float *b, long i, long j,
                     const shape *s, float *acc) {
  const long K = s->K, Co = s->Co;
  for (long c = 0; c < Co; c++) acc[c] = b ? b[c] : 0.0f;
  for (long di = 0; di < K; di++)
    for (long dj = 0; dj < K; dj++) {
      const float v = buf[(i + di) * s->Wp + j + dj], *wq = wt + (di * K + dj) * Co;
      for (long c = 0; c < Co; c++) acc[c] += v * wq[c];
    }
}

static int forward(const float *x, const float *w, const float *b, void *y, uint8_t *arg,
                   int bf16, int pool, int relu, shape s) {
  const long KK = s.K * s.K, Co = s.Co;
  float *buf = malloc(sizeof(float) * (s.H + 2 * s.P) * s.Wp);
  float *wt = malloc(sizeof(float) * KK * Co), *acc = malloc(sizeof(float) * 5 * Co);
  if (!buf || !wt || !acc) { free(buf); free(wt); free(acc); return -1; }
  for (long c = 0; c < Co; c++)
    for (long q = 0; q < KK; q++) wt[q * Co + c] = w[c * KK + q];
  const long rows = pool ? s.h : s.Ho, cols = pool ? s.w : s.Wo;
  for (long n = 0; n < s.N; n++) {
    pad_image(x + n * s.H * s.W, buf, s.H, s.W, s.P);
    for (long i = 0; i < rows; i++)
      for (long j = 0; j < cols; j++) {
        const long at = ((n * rows + i) * cols + j) * Co;
        float *out = acc;
        if (pool) {
          for (int q = 0; q < 4; q++) convolve(buf, wt, b, 2 * i + (q >> 1), 2 * j + (q & 1), &s, acc + (q + 1) * Co);
          for (long c = 0; c < Co; c++) { /* the same tournament as the vector code */
            const float a0 = acc[Co + c], a1 = acc[2 * Co + c], a2 = acc[3 * Co + c], a3 = acc[4 * Co + c];
            const int top = a1 > a0, bottom = a3 > a2;
            const float m0 = top ? a1 : a0, m1 = bottom ? a3 : a2;
            const int down = m1 > m0;
            float m = down ? m1 : m0;
            uint8_t p = down ? (uint8_t)(2 + bottom) : (uint8_t)top;
            if (relu && !(m > 0)) { m = 0.0f; p = 4; }
            acc[c] = m;
            arg[at + c] = p;
          }
        } else {
          convolve(buf, wt, b, i, j, &s, out);
        }
        if (bf16) for (long c = 0; c < Co; c++) ((uint16_t *)y)[at + c] = to_bf16(out[c]);
        else memcpy((float *)y + at, out, sizeof(float) * Co);
      }
  }
  free(buf); free(wt); free(acc);
  return 0;
}

static int backward(const float *x, const void *g, const uint8_t *arg, int bf16, int pool,
                    float *gw, float *gb, shape s) {
  const long K = s.K, KK = K * K, Co = s.Co;
  float *buf = malloc(sizeof(float) * (s.H + 2 * s.P) * s.Wp);
  float *acc = calloc(KK * Co, sizeof(float)), *accb = calloc(Co, sizeof(float));
  if (!buf || !acc || !accb) { free(buf); free(acc); free(accb); return -1; }
  const long rows = pool ? s.h : s.Ho, cols = pool ? s.w : s.Wo;
  for (long n = 0; n < s.N; n++) {
    pad_image(x + n * s.H * s.W, buf, s.H, s.W, s.P);
    for (long i = 0; i < rows; i++)
      for (long j = 0; j < cols; j++) {
        const long at = ((n * rows + i) * cols + j) * Co;
        for (long c = 0; c < Co; c++) {
          const float gv = bf16 ? from_bf16(((const uint16_t *)g)[at + c]) : ((const float *)g)[at + c];
          long si = i, sj = j;
          if (pool) {
            const uint8_t q = arg[at + c];
            if (q > 3) continue;
            si = 2 * i + (q >> 1);
            sj = 2 * j + (q & 1);
          }
          accb[c] += gv;
          for (long di = 0; di < K; di++)
            for (long dj = 0; dj < K; dj++) acc[(di * K + dj) * Co + c] += buf[(si + di) * s.Wp + sj + dj] * gv;
        }
      }
  }
  for (long c = 0; c < Co; c++)
    for (long q = 0; q < KK; q++) gw[c * KK + q] = acc[q * Co + c];
  if (gb) memcpy(gb, accb, sizeof(float) * Co);
  free(buf); free(acc); free(accb);
  return 0;
}
#endif

int conv1_forward_f32(const float *x, const float *w, const float *b, float *y,
                      long N, long H, long W, long K, long P, long Co) {
  return forward(x, w, b, y, NULL, 0, 0, 0, make_shape(N, H, W, K, P, Co));
}

int conv1_forward_bf16(const float *x, const float *w, const float *b, uint16_t *y,
                       long N, long H, long W, long K, long P, long Co) {
  return forward(x, w, b, y, NULL, 1, 0, 0, make_shape(N, H, W, K, P, Co));
}

int conv1_backward_f32(const float *x, const float *g, float *gw, float *gb,
                       long N, long H, long W, long K, long P, long Co) {
  return backward(x, g, NULL, 0, 0, gw, gb, make_shape(N, H, W, K, P, Co));
}

int conv1_backward_bf16(const float *x, const uint16_t *g, float *gw, float *gb,
                        long N, long H, long W, long K, long P, long Co) {
  return backward(x, g, NULL, 1, 0, gw, gb, make_shape(N, H, W, K, P, Co));
}

int conv1_pool_forward_f32(const float *x, const float *w, const float *b, float *y, uint8_t *arg,
                           long N, long H, long W, long K, long P, long Co, int relu) {
  return forward(x, w, b, y, arg, 0, 1, relu, make_shape(N, H, W, K, P, Co));
}

int conv1_pool_forward_bf16(const float *x, const float *w, const float *b, uint16_t *y, uint8_t *arg,
                            long N, long H, long W, long K, long P, long Co, int relu) {
  return forward(x, w, b, y, arg, 1, 1, relu, make_shape(N, H, W, K, P, Co));
}

int conv1_pool_backward_f32(const float *x, const float *g, const uint8_t *arg, float *gw, float *gb,
                            long N, long H, long W, long K, long P, long Co) {
  return backward(x, g, arg, 0, 1, gw, gb, make_shape(N, H, W, K, P, Co));
}

int conv1_pool_backward_bf16(const float *x, const uint16_t *g, const uint8_t *arg, float *gw,
                             float *gb, long N, long H, long W, long K, long P, long Co) {
  return backward(x, g, arg, 1, 1, gw, gb, make_shape(N, H, W, K, P, Co));
}
