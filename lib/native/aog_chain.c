/*
 * aog_chain: sha256-chain-v2 links in one native call (N-API). Built by node-gyp against Node's own
 * headers; optional (lib/challenge/native.ts falls back to the TypeScript chain when this does not
 * build or load). A link is h_i = SHA-256(h_(i-1) XOR K), K the 32-byte chain key.
 *
 * Two kernels, chosen once when the module loads:
 *   sha-ni   x86-64 CPUs with the SHA extensions: one SHA-256 block per link, straight from the
 *            previous state. Every link hashes exactly 32 bytes (the previous digest XOR K), so its
 *            block is those bytes plus constant padding: no buffering, no padding, no byte order
 *            round trip, and the state and key never leave the vector registers. The chain is a
 *            dependency chain of SHA256RNDS2 instructions. Checked against OpenSSL at load; if they
 *            ever disagree the module keeps to OpenSSL.
 *   openssl  everywhere else, and with AOG_CHAIN_KERNEL=openssl: the SHA-256 of the OpenSSL that
 *            Node bundles and exports (whose block function also uses the SHA extensions).
 *
 *   kernel: 'sha-ni' | 'openssl'                                  the kernel in use
 *   iterate(digest: Uint8Array(32), key: Uint8Array(32), n): void  advance n links in place
 *   opensslIterate(digest, key, n): void                           the same, always on OpenSSL (tests)
 *   chain(start, key, n, k): Buffer                                the n/k checkpoints, concatenated
 *   chainAsync(start, key, n, k): Promise<Buffer>                  the same on the libuv thread pool
 *   opensslLoop(key, n): Buffer                                    baseline for bench:chain: a plain C
 *                                                                  loop of XOR + SHA256_Init/Update/Final
 *                                                                  from a zero digest
 */
#include <node_api.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "aog_chain: N-API call failed"); return NULL; } } while (0)

static void links_openssl(unsigned char d[32], const unsigned char key[32], uint64_t n) {
  SHA256_CTX c;
  unsigned char x[32];
  for (uint64_t i = 0; i < n; i++) {
    for (int j = 0; j < 32; j++) x[j] = d[j] ^ key[j];
    SHA256_Init(&c);
    SHA256_Update(&c, x, 32);
    SHA256_Final(d, &c);
  }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AOG_SHANI 1
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* SHA extensions (CPUID 7.0:EBX bit 29), SSSE3 (1:ECX bit 9) and SSE4.1 (1:ECX bit 19). */
static int cpu_has_shani(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 9)) || !(c & (1u << 19))) return 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (b & (1u << 29)) != 0;
}

#define K4(i) _mm_loadu_si128((const __m128i *)&K256[i])
/* Four rounds on message words T (W[i..i+3]). */
#define ROUNDS4(T, i) do { \
    __m128i m_ = _mm_add_epi32((T), K4(i)); \
    s1 = _mm_sha256rnds2_epu32(s1, s0, m_); \
    s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(m_, 0x0E)); \
  } while (0)
/* The next four schedule words into A (msg1 already applied to A), from the two groups after it, C and D. */
#define SCHEDULE(A, C, D) do { (A) = _mm_sha256msg2_epu32(_mm_add_epi32((A), _mm_alignr_epi8((D), (C), 4)), (D)); } while (0)

__attribute__((target("sha,ssse3,sse4.1")))
static void links_shani(unsigned char d[32], const unsigned char key[32], uint64_t n) {
  const __m128i BSWAP = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  /* The initial state in the instructions' layout: lanes 3..0 = A B E F and C D G H. */
  const __m128i IV0 = _mm_set_epi32(0x6a09e667, 0xbb67ae85, 0x510e527f, 0x9b05688c);
  const __m128i IV1 = _mm_set_epi32(0x3c6ef372, 0xa54ff53a, 0x1f83d9ab, 0x5be0cd19);
  /* The same reversed to lanes 0..3 = A B E F / C D G H, and folded with the first four K. */
  const __m128i RIV0 = _mm_shuffle_epi32(IV0, 0x1B);
  const __m128i RIV1 = _mm_shuffle_epi32(IV1, 0x1B);
  const __m128i KK01 = _mm_set_epi32(0, 0, (int)K256[1], (int)K256[0]);
  const __m128i KK23 = _mm_set_epi32(0, 0, (int)K256[3], (int)K256[2]);
  /* Words 8..15 of every block: 0x80 after the 32 bytes, zeros, then the length, 256 bits. */
  const __m128i PAD2 = _mm_set_epi32(0, 0, 0, (int)0x80000000u);
  const __m128i PAD3 = _mm_set_epi32(256, 0, 0, 0);
  /* The key's words: KA = k0..k3, KE = k4..k7 (lane 0 first), and the same in the A B E F / C D G H
   * layout of the state after the rounds. */
  const __m128i KA = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)key), BSWAP);
  const __m128i KE = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(key + 16)), BSWAP);
  const __m128i KY0 = _mm_unpacklo_epi64(KA, KE);
  const __m128i KY1 = _mm_unpackhi_epi64(KA, KE);
  /* w0 = W[0..3] = (digest XOR key) words A B C D, w1 = W[4..7] = E F G H (lane 0 first). */
  __m128i w0 = _mm_xor_si128(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)d), BSWAP), KA);
  __m128i w1 = _mm_xor_si128(_mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(d + 16)), BSWAP), KE);
  /* The first two round pairs' inputs (lanes 0 and 1 are what SHA256RNDS2 reads). */
  __m128i first0 = _mm_add_epi32(w0, K4(0));
  __m128i first1 = _mm_shuffle_epi32(first0, 0x0E);
  for (uint64_t it = 0; it < n; it++) {
    __m128i s0 = IV0, s1 = IV1;
    __m128i t0 = w0, t1 = w1, t2 = PAD2, t3 = PAD3;
    s1 = _mm_sha256rnds2_epu32(s1, s0, first0);
    s0 = _mm_sha256rnds2_epu32(s0, s1, first1);
    ROUNDS4(t1, 4);  t0 = _mm_sha256msg1_epu32(t0, t1);
    ROUNDS4(t2, 8);  t1 = _mm_sha256msg1_epu32(t1, t2);
    ROUNDS4(t3, 12); SCHEDULE(t0, t2, t3); t2 = _mm_sha256msg1_epu32(t2, t3);
    for (int r = 16; r < 64; r += 16) {
      ROUNDS4(t0, r);      SCHEDULE(t1, t3, t0); t3 = _mm_sha256msg1_epu32(t3, t0);
      ROUNDS4(t1, r + 4);  SCHEDULE(t2, t0, t1); t0 = _mm_sha256msg1_epu32(t0, t1);
      ROUNDS4(t2, r + 8);  SCHEDULE(t3, t1, t2); t1 = _mm_sha256msg1_epu32(t1, t2);
      ROUNDS4(t3, r + 12); SCHEDULE(t0, t2, t3); t2 = _mm_sha256msg1_epu32(t2, t3);
    }
    /* Lanes 0..3 = a b e f and c d g h, before the feed-forward; then the new digest XOR the key
     * (the next block's message), and its first rounds' inputs W0+K0, W1+K1 (then W2, W3). */
    __m128i x0 = _mm_shuffle_epi32(s0, 0x1B);
    __m128i x1 = _mm_shuffle_epi32(s1, 0x1B);
    __m128i z0 = _mm_xor_si128(_mm_add_epi32(x0, RIV0), KY0); /* A B E F, keyed */
    __m128i z1 = _mm_xor_si128(_mm_add_epi32(x1, RIV1), KY1); /* C D G H, keyed */
    first0 = _mm_add_epi32(z0, KK01);
    first1 = _mm_add_epi32(z1, KK23);
    w0 = _mm_unpacklo_epi64(z0, z1);       /* A B C D */
    w1 = _mm_unpackhi_epi64(z0, z1);       /* E F G H */
  }
  /* The message words are the digest XOR the key: the key off again gives the digest. */
  _mm_storeu_si128((__m128i *)d, _mm_shuffle_epi8(_mm_xor_si128(w0, KA), BSWAP));
  _mm_storeu_si128((__m128i *)(d + 16), _mm_shuffle_epi8(_mm_xor_si128(w1, KE), BSWAP));
}
#endif

typedef void (*links_fn)(unsigned char d[32], const unsigned char key[32], uint64_t n);
/* Set once at load (select_kernel); every environment (main thread, workers) selects the same. */
static links_fn links = links_openssl;
static const char *kernel = "openssl";

/* The SHA-NI kernel must agree with OpenSSL on chains of several lengths before it is used. */
static void select_kernel(void) {
#ifdef AOG_SHANI
  const char *want = getenv("AOG_CHAIN_KERNEL");
  if (want != NULL && strcmp(want, "openssl") == 0) return;
  if (!cpu_has_shani()) return;
  static const uint64_t lengths[] = { 0, 1, 2, 3, 64, 1000 };
  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    unsigned char a[32], b[32], key[32];
    for (int j = 0; j < 32; j++) {
      a[j] = b[j] = (unsigned char)(j * 37 + i * 101 + 7);
      key[j] = (unsigned char)(j * 53 + i * 29 + 3);
    }
    links_shani(a, key, lengths[i]);
    links_openssl(b, key, lengths[i]);
    if (memcmp(a, b, 32) != 0) return;
  }
  links = links_shani;
  kernel = "sha-ni";
#endif
}

static int get_digest(napi_env env, napi_value v, unsigned char **out) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta) return 0;
  napi_typedarray_type type;
  size_t length;
  void *data;
  napi_value ab;
  size_t offset;
  if (napi_get_typedarray_info(env, v, &type, &length, &data, &ab, &offset) != napi_ok) return 0;
  if (type != napi_uint8_array || length != 32) return 0;
  *out = (unsigned char *)data;
  return 1;
}

static int get_count(napi_env env, napi_value v, uint64_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) return 0;
  if (!(d >= 0) || d > 9007199254740991.0 || d != (double)(uint64_t)d) return 0;
  *out = (uint64_t)d;
  return 1;
}

static napi_value iterate_with(napi_env env, napi_callback_info info, links_fn fn) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  unsigned char *d, *key, k[32];
  uint64_t n;
  if (argc < 3 || !get_digest(env, argv[0], &d) || !get_digest(env, argv[1], &key) || !get_count(env, argv[2], &n)) {
    napi_throw_range_error(env, NULL, "iterate(digest: Uint8Array(32), key: Uint8Array(32), n: non-negative integer)");
    return NULL;
  }
  memcpy(k, key, 32); /* the key may alias the digest */
  fn(d, k, n);
  return NULL;
}

static napi_value iterate(napi_env env, napi_callback_info info) { return iterate_with(env, info, links); }
static napi_value openssl_iterate(napi_env env, napi_callback_info info) { return iterate_with(env, info, links_openssl); }

static int chain_args(napi_env env, napi_callback_info info, unsigned char start[32], unsigned char key[32], uint64_t *n, uint64_t *k) {
  size_t argc = 4;
  napi_value argv[4];
  unsigned char *s, *kp;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4 || !get_digest(env, argv[0], &s) ||
      !get_digest(env, argv[1], &kp) || !get_count(env, argv[2], n) || !get_count(env, argv[3], k) || *k == 0 ||
      *n % *k != 0 || *n / *k > 1024) {
    napi_throw_range_error(env, NULL, "chain(start: Uint8Array(32), key: Uint8Array(32), n, k): k must divide n and n/k <= 1024");
    return 0;
  }
  memcpy(start, s, 32);
  memcpy(key, kp, 32);
  return 1;
}

static void run_chain(unsigned char d[32], const unsigned char key[32], uint64_t n, uint64_t k, unsigned char *out) {
  uint64_t m = n / k;
  for (uint64_t j = 0; j < m; j++) {
    links(d, key, k);
    memcpy(out + 32 * j, d, 32);
  }
}

static napi_value chain(napi_env env, napi_callback_info info) {
  unsigned char d[32], key[32];
  uint64_t n, k;
  if (!chain_args(env, info, d, key, &n, &k)) return NULL;
  void *out;
  napi_value buf;
  CHECK(napi_create_buffer(env, (size_t)(n / k) * 32, &out, &buf));
  run_chain(d, key, n, k, (unsigned char *)out);
  return buf;
}

typedef struct {
  unsigned char start[32];
  unsigned char key[32];
  uint64_t n, k;
  unsigned char *out;
  napi_async_work work;
  napi_deferred deferred;
} job_t;

static void job_execute(napi_env env, void *data) {
  (void)env;
  job_t *j = (job_t *)data;
  run_chain(j->start, j->key, j->n, j->k, j->out);
}

static void job_complete(napi_env env, napi_status status, void *data) {
  job_t *j = (job_t *)data;
  napi_value result;
  if (status == napi_ok && napi_create_buffer_copy(env, (size_t)(j->n / j->k) * 32, j->out, NULL, &result) == napi_ok) {
    napi_resolve_deferred(env, j->deferred, result);
  } else {
    napi_value msg, err;
    napi_create_string_utf8(env, "aog_chain: async chain failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &err);
    napi_reject_deferred(env, j->deferred, err);
  }
  napi_delete_async_work(env, j->work);
  free(j->out);
  free(j);
}

static napi_value chain_async(napi_env env, napi_callback_info info) {
  job_t *j = (job_t *)calloc(1, sizeof(job_t));
  if (j == NULL) { napi_throw_error(env, NULL, "aog_chain: out of memory"); return NULL; }
  if (!chain_args(env, info, j->start, j->key, &j->n, &j->k)) { free(j); return NULL; }
  j->out = (unsigned char *)malloc((size_t)(j->n / j->k) * 32);
  napi_value promise, name;
  if (j->out == NULL || napi_create_promise(env, &j->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "aog_chain", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, job_execute, job_complete, j, &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    free(j->out);
    free(j);
    napi_throw_error(env, NULL, "aog_chain: cannot queue the async chain");
    return NULL;
  }
  return promise;
}

static napi_value openssl_loop(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  uint64_t n;
  unsigned char *kp;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || !get_digest(env, argv[0], &kp) || !get_count(env, argv[1], &n)) {
    napi_throw_range_error(env, NULL, "opensslLoop(key: Uint8Array(32), n)");
    return NULL;
  }
  unsigned char d[32] = {0}, key[32], x[32];
  memcpy(key, kp, 32);
  SHA256_CTX c;
  for (uint64_t i = 0; i < n; i++) {
    for (int j = 0; j < 32; j++) x[j] = d[j] ^ key[j];
    SHA256_Init(&c); SHA256_Update(&c, x, 32); SHA256_Final(d, &c);
  }
  void *out;
  napi_value buf;
  CHECK(napi_create_buffer_copy(env, 32, d, &out, &buf));
  return buf;
}

static napi_value init(napi_env env, napi_value exports) {
  select_kernel();
  napi_value kernel_name;
  CHECK(napi_create_string_utf8(env, kernel, NAPI_AUTO_LENGTH, &kernel_name));
  napi_property_descriptor props[] = {
    { "kernel", NULL, NULL, NULL, NULL, kernel_name, napi_enumerable, NULL },
    { "opensslIterate", NULL, openssl_iterate, NULL, NULL, NULL, napi_enumerable, NULL },
    { "iterate", NULL, iterate, NULL, NULL, NULL, napi_enumerable, NULL },
    { "chain", NULL, chain, NULL, NULL, NULL, napi_enumerable, NULL },
    { "chainAsync", NULL, chain_async, NULL, NULL, NULL, napi_enumerable, NULL },
    { "opensslLoop", NULL, openssl_loop, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
