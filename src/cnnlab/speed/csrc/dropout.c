/* Dropout masks: each element 0 with probability p, else the scale 1/(1-p), written
   directly in the tensor's dtype so that dropout is one multiplication.

   Random bits come from SplitMix64 over a counter: word w is mix(seed + (w+1)·γ), so
   every word is independent of the others and the loop vectorises. Each 64-bit word
   gives four 16-bit slices; an element is kept when its slice, read as a signed 16-bit
   integer, is at least `threshold` (p quantised to 1/65,536, as cnnlab's torch
   fallback). The seed is drawn from torch's generator by the caller, so
   torch.manual_seed makes the masks repeatable; since each word depends on its index
   alone, sharing the words among threads (OpenMP, see conv1.c) changes nothing.

   The function is written once, as DROPOUT_MASK, and instantiated for each dtype by the
   type of its raw bits: uint16_t for bf16, uint32_t for fp32. */
#include <stdint.h>

static inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

#define GAMMA 0x9E3779B97F4A7C15ull

#define DROPOUT_MASK(NAME, T)                                                          \
  void NAME(T *out, long n, uint64_t seed, int threshold, T scale) {                 \
    long words = n / 4;                                                              \
    _Pragma("omp parallel for schedule(static) if (n >= 65536)")                     \
    for (long w = 0; w < words; w++) {                                               \
      uint64_t z = mix64(seed + (uint64_t)(w + 1) * GAMMA);                          \
      for (int s = 0; s < 4; s++)                                                    \
        out[4 * w + s] = (int16_t)(uint16_t)(z >> (16 * s)) >= threshold ? scale : 0; \
    }                                                                                \
    if (n % 4) {                                                                     \
      uint64_t z = mix64(seed + (uint64_t)(words + 1) * GAMMA);                      \
      for (long i = 4 * words; i < n; i++, z >>= 16)                                 \
        out[i] = (int16_t)(uint16_t)z >= threshold ? scale : 0;                      \
    }                                                                                \
  }

DROPOUT_MASK(dropout_mask_bf16, uint16_t)
DROPOUT_MASK(dropout_mask_f32, uint32_t)
