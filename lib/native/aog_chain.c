/*
 * aog_chain: sha256-chain-v1 links in one native call (N-API), on the SHA-256 of the OpenSSL that
 * Node itself bundles and exports (whose block function uses the CPU's SHA extensions where present).
 * Built by node-gyp against Node's own headers; optional (lib/challenge/native.ts falls back to the
 * TypeScript chain when this does not build or load).
 *
 *   iterate(digest: Uint8Array(32), n: number): void             advance n links in place
 *   chain(start: Uint8Array(32), n: number, k: number): Buffer    the n/k checkpoints, concatenated
 *   chainAsync(start, n, k): Promise<Buffer>                      the same on the libuv thread pool
 *   opensslLoop(n: number): Buffer                                baseline for bench:chain: a plain C
 *                                                                 loop of SHA256_Init/Update/Final
 * Every link hashes exactly the 32-byte previous digest.
 */
#include <node_api.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "aog_chain: N-API call failed"); return NULL; } } while (0)

static void links(unsigned char d[32], uint64_t n) {
  SHA256_CTX c;
  for (uint64_t i = 0; i < n; i++) {
    SHA256_Init(&c);
    SHA256_Update(&c, d, 32);
    SHA256_Final(d, &c);
  }
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

static napi_value iterate(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  unsigned char *d;
  uint64_t n;
  if (argc < 2 || !get_digest(env, argv[0], &d) || !get_count(env, argv[1], &n)) {
    napi_throw_range_error(env, NULL, "iterate(digest: Uint8Array(32), n: non-negative integer)");
    return NULL;
  }
  links(d, n);
  return NULL;
}

static int chain_args(napi_env env, napi_callback_info info, unsigned char start[32], uint64_t *n, uint64_t *k) {
  size_t argc = 3;
  napi_value argv[3];
  unsigned char *s;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 || !get_digest(env, argv[0], &s) ||
      !get_count(env, argv[1], n) || !get_count(env, argv[2], k) || *k == 0 || *n % *k != 0 || *n / *k > 1024) {
    napi_throw_range_error(env, NULL, "chain(start: Uint8Array(32), n, k): k must divide n and n/k <= 1024");
    return 0;
  }
  memcpy(start, s, 32);
  return 1;
}

static void run_chain(unsigned char d[32], uint64_t n, uint64_t k, unsigned char *out) {
  uint64_t m = n / k;
  for (uint64_t j = 0; j < m; j++) {
    links(d, k);
    memcpy(out + 32 * j, d, 32);
  }
}

static napi_value chain(napi_env env, napi_callback_info info) {
  unsigned char d[32];
  uint64_t n, k;
  if (!chain_args(env, info, d, &n, &k)) return NULL;
  void *out;
  napi_value buf;
  CHECK(napi_create_buffer(env, (size_t)(n / k) * 32, &out, &buf));
  run_chain(d, n, k, (unsigned char *)out);
  return buf;
}

typedef struct {
  unsigned char start[32];
  uint64_t n, k;
  unsigned char *out;
  napi_async_work work;
  napi_deferred deferred;
} job_t;

static void job_execute(napi_env env, void *data) {
  (void)env;
  job_t *j = (job_t *)data;
  run_chain(j->start, j->n, j->k, j->out);
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
  if (!chain_args(env, info, j->start, &j->n, &j->k)) { free(j); return NULL; }
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
  size_t argc = 1;
  napi_value argv[1];
  uint64_t n;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || !get_count(env, argv[0], &n)) { napi_throw_range_error(env, NULL, "opensslLoop(n)"); return NULL; }
  unsigned char d[32] = {0};
  SHA256_CTX c;
  for (uint64_t i = 0; i < n; i++) { SHA256_Init(&c); SHA256_Update(&c, d, 32); SHA256_Final(d, &c); }
  void *out;
  napi_value buf;
  CHECK(napi_create_buffer_copy(env, 32, d, &out, &buf));
  return buf;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "iterate", NULL, iterate, NULL, NULL, NULL, napi_enumerable, NULL },
    { "chain", NULL, chain, NULL, NULL, NULL, napi_enumerable, NULL },
    { "chainAsync", NULL, chain_async, NULL, NULL, NULL, napi_enumerable, NULL },
    { "opensslLoop", NULL, openssl_loop, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
