/* Batch normalisation in training mode over channels-last (NHWC) tensors, ReLU optionally
   fused: the batch's statistics, the normalised output, and the backward pass.

   A channels-last N×C×H×W tensor is an M×C matrix (M = N·H·W rows, one per pixel).
   torch's CPU kernels reduce such a tensor along its outer dimension slowly: on the
   speedrun network its batch norm took more than half of a training step. Here the
   matrix is walked in tiles of TILE rows: a tile is TILE·C consecutive values, and the
   per-channel constants are laid out once per tile (channel c at t·C + c), so every loop
   is one flat loop over a tile that the compiler vectorises whatever C is. The rows
   after the last whole tile are done one by one.

   Statistics are two passes (the mean, then the centred squares), each block of tiles
   summed in fp32 and the blocks in fp64, so a large mean costs no precision. The
   backward pass recomputes the ReLU's mask from the input instead of storing it:

     g   = dy, or 0 where (x − mean)·scale + b ≤ 0 (fused ReLU)
     db  = Σ g,   dw = Σ g·(x − mean) · invstd
     dx  = scale·g + k1·(x − mean) + k0,
           k1 = −scale·invstd²·Σ g·(x − mean) / M,   k0 = −scale·db / M

   with scale = w·invstd, which the caller computes. The output is (x − mean)·scale + b
   rather than x·scale + (b − mean·scale): with a mean large against the spread, the
   second form loses the spread to cancellation in fp32.

   The loops over tiles are written once, as functions of a flag `bf16` (values stored
   as bf16, rounded to nearest even as torch rounds, else fp32) and `relu`, and called
   with both flags as literal constants from inside each OpenMP region of the exported
   functions (bn_*_bf16, bn_*_f32, at the end). OpenMP outlines a region before the
   compiler inlines anything, so only there do the flags reach the loops as constants:
   with a region around a flag-generic loop, the loops ran 2-3× slower, unvectorised.
   Threads are torch's own where the library is built with OpenMP (see conv1.c); each
   thread sums its tiles into its own row of a scratch array. Functions that allocate
   return 1 when out of memory, else 0. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#define THREAD_INDEX() omp_get_thread_num()
#define THREAD_COUNT() omp_get_num_threads()
#define MAX_THREADS() omp_get_max_threads()
#else
#define THREAD_INDEX() 0
#define THREAD_COUNT() 1
#define MAX_THREADS() 1
#endif

#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Rows per tile: TILE·C values fill whole vectors of 16 fp32 lanes for any C. */
#define TILE 16
/* Tiles summed in fp32 before they are added to the fp64 totals. */
#define BLOCK 16
/* Below this many values one thread does the whole pass. */
#define PARALLEL_FROM 65536

ALWAYS_INLINE float load(const void *restrict p, int bf16, long i) {
  if (!bf16) return ((const float *)p)[i];
  uint32_t u = (uint32_t)((const uint16_t *)p)[i] << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

ALWAYS_INLINE void store(void *restrict p, int bf16, long i, float v) {
  if (!bf16) {
    ((float *)p)[i] = v;
    return;
  }
  uint32_t u;
  memcpy(&u, &v, 4);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x40u; /* NaN stays a (quiet) NaN */
  ((uint16_t *)p)[i] = (uint16_t)((u & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

/* (x − mean)·scale + bias, through the ReLU when relu; NaN stays NaN, as in torch's ReLU. */
ALWAYS_INLINE float affine(float x, float mean, float scale, float bias, int relu) {
  const float y = (x - mean) * scale + bias;
  return relu && y < 0.0f ? 0.0f : y;
}

/* The gradient that reaches the normalisation: dy, or 0 where the ReLU was off. */
ALWAYS_INLINE float through_relu(float dy, float x, float mean, float scale, float bias,
                                 int relu) {
  return relu && !((x - mean) * scale + bias > 0.0f) ? 0.0f : dy;
}

/* v[0..C) repeated TILE times. */
static void per_tile(const float *v, long C, float *restrict out) {
  for (long t = 0; t < TILE; t++)
    for (long c = 0; c < C; c++) out[t * C + c] = v[c];
}

/* This thread's share [*lo, *hi) of `count` tiles. */
static void my_share(long count, long *lo, long *hi) {
  const long t = THREAD_INDEX(), n = THREAD_COUNT();
  *lo = count * t / n;
  *hi = count * (t + 1) / n;
}

/* Runs WORK (which reads lo and hi) on each thread's share of the M / TILE tiles. */
#define PARALLEL(M, C, WORK)                                   \
  _Pragma("omp parallel if ((M) * (C) >= PARALLEL_FROM)") {    \
    long lo, hi;                                               \
    my_share((M) / TILE, &lo, &hi);                            \
    WORK;                                                      \
  }

/* ------------------------------------------------------------------ tile loops */

/* Into out[j] (fp64, j < TILE·C): Σ over tiles [lo, hi) of (x − centre), or of its
   square with `square`. */
ALWAYS_INLINE void sum_tiles(const void *restrict x, int bf16, int square, long width,
                             const float *restrict centre, long lo, long hi,
                             double *restrict out) {
  float part[width];
  for (long b = lo; b < hi; b += BLOCK) {
    const long end = b + BLOCK < hi ? b + BLOCK : hi;
    for (long j = 0; j < width; j++) part[j] = 0.0f;
    for (long t = b; t < end; t++)
      for (long j = 0; j < width; j++) {
        const float d = load(x, bf16, t * width + j) - centre[j];
        part[j] += square ? d * d : d;
      }
    for (long j = 0; j < width; j++) out[j] += part[j];
  }
}

ALWAYS_INLINE void apply_tiles(const void *restrict x, void *restrict y, int bf16, int relu,
                               long width, const float *restrict mean,
                               const float *restrict scale, const float *restrict bias,
                               long lo, long hi) {
  for (long t = lo; t < hi; t++)
    for (long j = 0; j < width; j++) {
      const long i = t * width + j;
      store(y, bf16, i, affine(load(x, bf16, i), mean[j], scale[j], bias[j], relu));
    }
}

/* Into sum_g[j] and sum_gd[j] (fp64): Σ g and Σ g·(x − mean) over tiles [lo, hi). */
ALWAYS_INLINE void grad_sum_tiles(const void *restrict x, const void *restrict dy, int bf16,
                                  int relu, long width, const float *restrict mean,
                                  const float *restrict scale, const float *restrict bias,
                                  long lo, long hi, double *restrict sum_g,
                                  double *restrict sum_gd) {
  float pg[width], pgd[width];
  for (long b = lo; b < hi; b += BLOCK) {
    const long end = b + BLOCK < hi ? b + BLOCK : hi;
    for (long j = 0; j < width; j++) pg[j] = pgd[j] = 0.0f;
    for (long t = b; t < end; t++)
      for (long j = 0; j < width; j++) {
        const long i = t * width + j;
        const float xv = load(x, bf16, i);
        const float g = through_relu(load(dy, bf16, i), xv, mean[j], scale[j], bias[j], relu);
        pg[j] += g;
        pgd[j] += g * (xv - mean[j]);
      }
    for (long j = 0; j < width; j++) {
      sum_g[j] += pg[j];
      sum_gd[j] += pgd[j];
    }
  }
}

ALWAYS_INLINE void grad_input_tiles(const void *restrict x, const void *restrict dy,
                                    void *restrict dx, int bf16, int relu, long width,
                                    const float *restrict mean, const float *restrict scale,
                                    const float *restrict bias, const float *restrict k0,
                                    const float *restrict k1, long lo, long hi) {
  for (long t = lo; t < hi; t++)
    for (long j = 0; j < width; j++) {
      const long i = t * width + j;
      const float xv = load(x, bf16, i);
      const float g = through_relu(load(dy, bf16, i), xv, mean[j], scale[j], bias[j], relu);
      store(dx, bf16, i, scale[j] * g + k1[j] * (xv - mean[j]) + k0[j]);
    }
}

/* ------------------------------------------------------------ serial parts */

/* Per-channel totals of the threads' tile sums (`rows` rows of `width`, every `stride`
   doubles), into out[c]. */
static void fold(const double *scratch, long rows, long stride, long C, double *out) {
  for (long c = 0; c < C; c++) out[c] = 0.0;
  for (long r = 0; r < rows; r++)
    for (long k = 0; k < TILE; k++)
      for (long c = 0; c < C; c++) out[c] += scratch[r * stride + k * C + c];
}

/* Adds the rows after the last whole tile to column sums of (x − centre)[²]. */
static void sum_tail(const void *x, int bf16, int square, long M, long C, const float *centre,
                     double *out) {
  for (long r = M / TILE * TILE; r < M; r++)
    for (long c = 0; c < C; c++) {
      const double d = load(x, bf16, r * C + c) - centre[c];
      out[c] += square ? d * d : d;
    }
}

static void apply_tail(const void *x, void *y, int bf16, int relu, long M, long C,
                       const float *mean, const float *scale, const float *bias) {
  for (long r = M / TILE * TILE; r < M; r++)
    for (long c = 0; c < C; c++) {
      const long i = r * C + c;
      store(y, bf16, i, affine(load(x, bf16, i), mean[c], scale[c], bias[c], relu));
    }
}

/* Adds the tail rows to Σ g and Σ g·(x − mean). */
static void grad_sum_tail(const void *x, const void *dy, int bf16, int relu, long M, long C,
                          const float *mean, const float *scale, const float *bias,
                          double *sum_g, double *sum_gd) {
  for (long r = M / TILE * TILE; r < M; r++)
    for (long c = 0; c < C; c++) {
      const long i = r * C + c;
      const float xv = load(x, bf16, i);
      const float g = through_relu(load(dy, bf16, i), xv, mean[c], scale[c], bias[c], relu);
      sum_g[c] += g;
      sum_gd[c] += (double)g * (xv - mean[c]);
    }
}

static void grad_input_tail(const void *x, const void *dy, void *dx, int bf16, int relu,
                            long M, long C, const float *mean, const float *scale,
                            const float *bias, const float *k0, const float *k1) {
  for (long r = M / TILE * TILE; r < M; r++)
    for (long c = 0; c < C; c++) {
      const long i = r * C + c;
      const float xv = load(x, bf16, i);
      const float g = through_relu(load(dy, bf16, i), xv, mean[c], scale[c], bias[c], relu);
      store(dx, bf16, i, scale[c] * g + k1[c] * (xv - mean[c]) + k0[c]);
    }
}

/* Scratch for one call: per-thread fp64 sums (`sums` per thread of TILE·C each) and
   `tiles` tile-laid fp32 constants, plus 2·C fp32 per-channel values. */
typedef struct {
  double *sums;
  float *tiles, *channel;
  long width, threads;
} scratch;

static int scratch_alloc(scratch *s, long C, int sums, int tiles) {
  s->width = TILE * C;
  s->threads = MAX_THREADS();
  s->sums = calloc((size_t)(s->threads * sums * s->width), sizeof(double));
  s->tiles = malloc((size_t)(tiles * s->width + 2 * C) * sizeof(float));
  s->channel = s->tiles ? s->tiles + tiles * s->width : NULL;
  if (s->sums && s->tiles) return 0;
  free(s->sums);
  free(s->tiles);
  return 1;
}

static void scratch_free(scratch *s) {
  free(s->sums);
  free(s->tiles);
}

/* ------------------------------------------------------------ entry points */

/* mean[c] and the biased variance var[c] of x's columns. */
#define STATS(SUFFIX, BF16)                                                              \
  int bn_stats_##SUFFIX(const void *x, long M, long C, float *mean, float *var) {       \
    scratch s;                                                                           \
    if (scratch_alloc(&s, C, 1, 1)) return 1;                                            \
    double *total = malloc((size_t)C * sizeof(double));                                  \
    if (!total) {                                                                        \
      scratch_free(&s);                                                                  \
      return 1;                                                                          \
    }                                                                                    \
    const long width = s.width;                                                          \
    float *centre = s.tiles, *zero = s.channel;                                          \
    double *sums = s.sums;                                                               \
    for (long c = 0; c < C; c++) zero[c] = 0.0f;                                         \
    per_tile(zero, C, centre);                                                           \
    PARALLEL(M, C, sum_tiles(x, BF16, 0, width, centre, lo, hi, sums + THREAD_INDEX() * width)) \
    fold(sums, s.threads, width, C, total);                                              \
    sum_tail(x, BF16, 0, M, C, zero, total);                                             \
    for (long c = 0; c < C; c++) mean[c] = (float)(total[c] / (double)M);                \
    per_tile(mean, C, centre);                                                           \
    memset(sums, 0, (size_t)(s.threads * width) * sizeof(double));                       \
    PARALLEL(M, C, sum_tiles(x, BF16, 1, width, centre, lo, hi, sums + THREAD_INDEX() * width)) \
    fold(sums, s.threads, width, C, total);                                              \
    sum_tail(x, BF16, 1, M, C, mean, total);                                             \
    for (long c = 0; c < C; c++) var[c] = (float)(total[c] / (double)M);                 \
    free(total);                                                                         \
    scratch_free(&s);                                                                    \
    return 0;                                                                            \
  }

/* y = (x − mean)·scale + bias per channel, through the ReLU with relu. */
#define APPLY(SUFFIX, BF16, RELU)                                                        \
  static int apply_##SUFFIX##_##RELU(const void *x, void *y, long M, long C,            \
                                     const float *mean, const float *scale,              \
                                     const float *bias) {                                \
    scratch s;                                                                           \
    if (scratch_alloc(&s, C, 0, 3)) return 1;                                            \
    const long width = s.width;                                                          \
    float *mt = s.tiles, *st = mt + width, *ht = st + width;                             \
    per_tile(mean, C, mt);                                                               \
    per_tile(scale, C, st);                                                              \
    per_tile(bias, C, ht);                                                               \
    PARALLEL(M, C, apply_tiles(x, y, BF16, RELU, width, mt, st, ht, lo, hi))             \
    apply_tail(x, y, BF16, RELU, M, C, mean, scale, bias);                               \
    scratch_free(&s);                                                                    \
    return 0;                                                                            \
  }

/* dx from dy (both M×C), and the weight and bias gradients dw, db (fp32, C each). */
#define BACKWARD(SUFFIX, BF16, RELU)                                                     \
  static int backward_##SUFFIX##_##RELU(const void *x, const void *dy, void *dx, long M,  \
                                        long C, const float *mean, const float *invstd,  \
                                        const float *scale, const float *bias,          \
                                        float *dw, float *db) {                          \
    scratch s;                                                                           \
    if (scratch_alloc(&s, C, 2, 5)) return 1;                                            \
    double *total = malloc((size_t)(2 * C) * sizeof(double));                            \
    if (!total) {                                                                        \
      scratch_free(&s);                                                                  \
      return 1;                                                                          \
    }                                                                                    \
    const long width = s.width;                                                          \
    float *mt = s.tiles, *st = mt + width, *ht = st + width, *k0t = ht + width;          \
    float *k1t = k0t + width, *k0 = s.channel, *k1 = s.channel + C;                      \
    double *sums = s.sums;                                                               \
    per_tile(mean, C, mt);                                                               \
    per_tile(scale, C, st);                                                              \
    per_tile(bias, C, ht);                                                              \
    PARALLEL(M, C, grad_sum_tiles(x, dy, BF16, RELU, width, mt, st, ht, lo, hi,          \
                                  sums + THREAD_INDEX() * 2 * width,                     \
                                  sums + THREAD_INDEX() * 2 * width + width))            \
    fold(sums, s.threads, 2 * width, C, total);                                          \
    fold(sums + width, s.threads, 2 * width, C, total + C);                              \
    grad_sum_tail(x, dy, BF16, RELU, M, C, mean, scale, bias, total, total + C);        \
    for (long c = 0; c < C; c++) {                                                       \
      const double g = total[c], gd = total[C + c];                                      \
      db[c] = (float)g;                                                                  \
      dw[c] = (float)(gd * invstd[c]);                                                   \
      k1[c] = (float)(-(double)scale[c] * invstd[c] * invstd[c] * gd / (double)M);       \
      k0[c] = (float)(-(double)scale[c] * g / (double)M);                                \
    }                                                                                    \
    per_tile(k0, C, k0t);                                                                \
    per_tile(k1, C, k1t);                                                                \
    PARALLEL(M, C, grad_input_tiles(x, dy, dx, BF16, RELU, width, mt, st, ht, k0t, k1t, lo, hi)) \
    grad_input_tail(x, dy, dx, BF16, RELU, M, C, mean, scale, bias, k0, k1);            \
    free(total);                                                                         \
    scratch_free(&s);                                                                    \
    return 0;                                                                            \
  }

#define EXPORT(SUFFIX, BF16)                                                             \
  STATS(SUFFIX, BF16)                                                                    \
  APPLY(SUFFIX, BF16, 0)                                                                 \
  APPLY(SUFFIX, BF16, 1)                                                                 \
  BACKWARD(SUFFIX, BF16, 0)                                                              \
  BACKWARD(SUFFIX, BF16, 1)                                                              \
  int bn_apply_##SUFFIX(const void *x, void *y, long M, long C, const float *mean,       \
                        const float *scale, const float *bias, int relu) {               \
    return (relu ? apply_##SUFFIX##_1 : apply_##SUFFIX##_0)(x, y, M, C, mean, scale, bias); \
  }                                                                                      \
  int bn_backward_##SUFFIX(const void *x, const void *dy, void *dx, long M, long C,      \
                           const float *mean, const float *invstd, const float *scale,   \
                           const float *bias, int relu, float *dw, float *db) {         \
    return (relu ? backward_##SUFFIX##_1 : backward_##SUFFIX##_0)(                       \
        x, dy, dx, M, C, mean, invstd, scale, bias, dw, db);                            \
  }

EXPORT(bf16, 1)
EXPORT(f32, 0)
