/* The functions of maxpool2.c, written once for both dtypes: maxpool2.c includes this
   file twice per build, after defining the names below for bf16 and then for fp32, and
   the end of this file undefines them for the next instantiation. (The algorithm, the
   winner numbers and the integer keys are described at the top of maxpool2.c.)

   Either build:
     NAME(f)   the exported name: f_bf16 or f_f32
     T         an element as raw bits: uint16_t or uint32_t
     LANES     elements in one vector of the main loop
     KEY(v)    the order keys of a vector of elements (and back: the map is an involution)
   AVX-512 (POOL2_AVX512 is 1), 512-bit vectors whose comparisons give bit masks:
     MASK, TAIL(left)       the mask type, and the mask of the first min(left, LANES) lanes
     LOAD(t, p), STORE(p, t, v), CMPGT(a, b), BLEND(m, a, b), KEEP(m, v)
                            masked load, store, a > b, m ? b : a, m ? v : 0 per lane
     BYTES, BYTES_...       the winners' vector, a byte a lane, and its SET1(c), BLEND,
                            KEEP, LOAD, STORE and CMPEQ(a, b) (a == b as a mask)
   AVX2 (POOL2_AVX512 is 0), 256-bit vectors whose comparisons give all-ones lanes:
     SET1(c), CMPGT(a, b), CMPEQ(a, b), SUB(a, b)   per lane at the element's width
     STORE_WINNERS(p, v), LOAD_WINNERS(p)           the winners, a byte a lane in memory
     SKEY(b), SKEY_T                                one element's key, and its signed type */
#ifndef NAME
#error "maxpool2_body.h is included by maxpool2.c, which defines the names it uses"
#endif

#if POOL2_AVX512

void NAME(pool2_forward)(const T *x, T *y, uint8_t *arg, long N, long H, long W, long C, int relu) {
  const long h = H / 2, w = W / 2, row = W * C;
  FOR_EACH_OUTPUT
    for (long k = 0; k < C; k += LANES) {
      const MASK t = TAIL(C - k);
      const T *a = x + IN_AT(n, i, j) + k;
      __m512i ka = KEY(LOAD(t, a));
      __m512i kb = KEY(LOAD(t, a + C));
      __m512i kc = KEY(LOAD(t, a + row));
      __m512i kd = KEY(LOAD(t, a + row + C));
      MASK top = CMPGT(kb, ka), bottom = CMPGT(kd, kc);
      __m512i m0 = BLEND(top, ka, kb), m1 = BLEND(bottom, kc, kd);
      MASK down = CMPGT(m1, m0);
      __m512i m = BLEND(down, m0, m1);
      BYTES p = BYTES_BLEND(down, BYTES_KEEP(top, BYTES_SET1(1)),
                            BYTES_BLEND(bottom, BYTES_SET1(2), BYTES_SET1(3)));
      __m512i v;
      if (relu) {
        MASK on = CMPGT(m, _mm512_setzero_si512());
        v = KEEP(on, m);
        p = BYTES_BLEND(on, BYTES_SET1(4), p);
      } else {
        v = KEY(m);
      }
      STORE(y + OUT_AT(n, i, j) + k, t, v);
      BYTES_STORE(arg + OUT_AT(n, i, j) + k, t, p);
    }
}

void NAME(pool2_backward)(const T *g, const uint8_t *arg, T *gx, long N, long H, long W, long C) {
  const long h = H / 2, w = W / 2, row = W * C;
  FOR_EACH_OUTPUT
    for (long k = 0; k < C; k += LANES) {
      const MASK t = TAIL(C - k);
      __m512i v = LOAD(t, g + OUT_AT(n, i, j) + k);
      BYTES p = BYTES_LOAD(t, arg + OUT_AT(n, i, j) + k);
      T *a = gx + IN_AT(n, i, j) + k;
      T *dst[4] = {a, a + C, a + row, a + row + C};
      for (int q = 0; q < 4; q++) {
        MASK hit = BYTES_CMPEQ(p, BYTES_SET1((char)q));
        STORE(dst[q], t, KEEP(hit, v));
      }
    }
}

#else /* AVX2: whole vectors of channels, then the rest one by one */

void NAME(pool2_forward)(const T *x, T *y, uint8_t *arg, long N, long H, long W, long C, int relu) {
  const long h = H / 2, w = W / 2, row = W * C;
  const __m256i one = SET1(1), two = SET1(2), four = SET1(4);
  FOR_EACH_OUTPUT {
    long k = 0;
    for (; k + LANES <= C; k += LANES) {
      const T *a = x + IN_AT(n, i, j) + k;
      __m256i ka = KEY(_mm256_loadu_si256((const __m256i *)a));
      __m256i kb = KEY(_mm256_loadu_si256((const __m256i *)(a + C)));
      __m256i kc = KEY(_mm256_loadu_si256((const __m256i *)(a + row)));
      __m256i kd = KEY(_mm256_loadu_si256((const __m256i *)(a + row + C)));
      __m256i top = CMPGT(kb, ka), bottom = CMPGT(kd, kc);
      __m256i m0 = _mm256_blendv_epi8(ka, kb, top), m1 = _mm256_blendv_epi8(kc, kd, bottom);
      __m256i down = CMPGT(m1, m0);
      __m256i m = _mm256_blendv_epi8(m0, m1, down);
      __m256i p = _mm256_blendv_epi8(_mm256_and_si256(top, one), SUB(two, bottom), down); /* 2 - (-1) = 3 */
      __m256i v;
      if (relu) {
        __m256i on = CMPGT(m, _mm256_setzero_si256());
        v = _mm256_and_si256(on, m);
        p = _mm256_blendv_epi8(four, p, on);
      } else {
        v = KEY(m);
      }
      _mm256_storeu_si256((__m256i *)(y + OUT_AT(n, i, j) + k), v);
      STORE_WINNERS(arg + OUT_AT(n, i, j) + k, p);
    }
    for (; k < C; k++) { /* one channel, scalar: the same comparisons as the vector code */
      const T *a = x + IN_AT(n, i, j) + k;
      T *yo = y + OUT_AT(n, i, j) + k;
      uint8_t *ao = arg + OUT_AT(n, i, j) + k;
      SKEY_T ka = SKEY(a[0]), kb = SKEY(a[C]), kc = SKEY(a[row]), kd = SKEY(a[row + C]);
      int top = kb > ka, bottom = kd > kc;
      SKEY_T m0 = top ? kb : ka, m1 = bottom ? kd : kc;
      int down = m1 > m0;
      SKEY_T m = down ? m1 : m0;
      uint8_t p = down ? (uint8_t)(2 + bottom) : (uint8_t)top;
      if (relu && m <= 0) { *yo = 0; *ao = 4; }
      else { *yo = (T)(relu ? m : SKEY((T)m)); *ao = p; }
    }
  }
}

void NAME(pool2_backward)(const T *g, const uint8_t *arg, T *gx, long N, long H, long W, long C) {
  const long h = H / 2, w = W / 2, row = W * C;
  FOR_EACH_OUTPUT {
    const T *v = g + OUT_AT(n, i, j);
    const uint8_t *p = arg + OUT_AT(n, i, j);
    T *a = gx + IN_AT(n, i, j);
    T *dst[4] = {a, a + C, a + row, a + row + C};
    long k = 0;
    for (; k + LANES <= C; k += LANES) {
      __m256i vv = _mm256_loadu_si256((const __m256i *)(v + k));
      __m256i pp = LOAD_WINNERS(p + k);
      for (int q = 0; q < 4; q++)
        _mm256_storeu_si256((__m256i *)(dst[q] + k), _mm256_and_si256(CMPEQ(pp, SET1(q)), vv));
    }
    for (; k < C; k++)
      for (int q = 0; q < 4; q++) dst[q][k] = p[k] == q ? v[k] : 0;
  }
}

#endif

#undef NAME
#undef T
#undef LANES
#undef KEY
#undef MASK
#undef TAIL
#undef LOAD
#undef STORE
#undef CMPGT
#undef BLEND
#undef KEEP
#undef BYTES
#undef BYTES_SET1
#undef BYTES_BLEND
#undef BYTES_KEEP
#undef BYTES_LOAD
#undef BYTES_STORE
#undef BYTES_CMPEQ
#undef SET1
#undef CMPEQ
#undef SUB
#undef STORE_WINNERS
#undef LOAD_WINNERS
#undef SKEY
#undef SKEY_T
