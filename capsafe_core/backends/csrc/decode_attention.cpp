// A decoding step's attention on a CPU in one pass: one query per row and query head, the query heads
// sharing a key-value head reading its keys and values once, the masked positions skipped, softmax
// in fp32. Built on first use by capsafe_core/backends/native.py (torch's C++ extension loader).
//
// decode_attention(query, key, value, valid, scale, generic) -> out
//   query (rows, heads, dim); key, value (rows, kv_heads, positions, dim), the last dimension
//   contiguous; valid (rows, positions) bool, True where a row attends; out (rows, heads, dim).
//   float32 or bfloat16 (all alike). A row attending to no position gets zeros. `generic` uses the
//   portable loops even where the vector ones exist (tests compare both).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define CAPSAFE_AVX512 1
#else
#define CAPSAFE_AVX512 0
#endif

namespace {

constexpr int kAhead = 16;  // rows of keys/values prefetched ahead of the one in use

inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) { return static_cast<float>(x); }

struct Item {  // one row and key-value head
  const int64_t* idx;  // the positions attended to
  int64_t n;
};

// Portable: any head dimension.
template <typename T>
void generic_head(const float* q, const T* k, int64_t ks, const T* v, int64_t vs, Item it, int64_t dim,
                  float* s, float* out) {
  float mx = -3.0e38f;
  for (int64_t j = 0; j < it.n; ++j) {
    const T* row = k + it.idx[j] * ks;
    float a = 0.f;
    for (int64_t d = 0; d < dim; ++d) a += q[d] * to_float(row[d]);
    s[j] = a;
    mx = a > mx ? a : mx;
  }
  float total = 0.f;
  for (int64_t j = 0; j < it.n; ++j) s[j] = std::exp(s[j] - mx);
  for (int64_t j = 0; j < it.n; ++j) total += s[j];
  for (int64_t d = 0; d < dim; ++d) out[d] = 0.f;
  for (int64_t j = 0; j < it.n; ++j) {
    const T* row = v + it.idx[j] * vs;
    for (int64_t d = 0; d < dim; ++d) out[d] += s[j] * to_float(row[d]);
  }
  const float inv = it.n ? 1.f / total : 0.f;
  for (int64_t d = 0; d < dim; ++d) out[d] *= inv;
}

#if CAPSAFE_AVX512
inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16(const at::BFloat16* p) {  // bfloat16 is a float's upper half
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

template <typename T, int D>
inline void prefetch(const T* base, int64_t stride, const Item& it, int64_t j) {
  if (j + kAhead < it.n) {
    const char* a = reinterpret_cast<const char*>(base + it.idx[j + kAhead] * stride);
    for (int c = 0; c < static_cast<int>(D * sizeof(T)); c += 64) _mm_prefetch(a + c, _MM_HINT_T0);
  }
}

// AVX-512: a head dimension of D (a multiple of 16), held in D/16 registers.
template <typename T, int D>
void vector_head(const float* q, const T* k, int64_t ks, const T* v, int64_t vs, Item it, int64_t,
                 float* s, float* out) {
  constexpr int C = D / 16;
  __m512 qv[C];
  for (int c = 0; c < C; ++c) qv[c] = _mm512_loadu_ps(q + 16 * c);
  float mx = -3.0e38f;
  for (int64_t j = 0; j < it.n; ++j) {
    prefetch<T, D>(k, ks, it, j);
    const T* row = k + it.idx[j] * ks;
    __m512 acc = _mm512_mul_ps(qv[0], load16(row));
    for (int c = 1; c < C; ++c) acc = _mm512_fmadd_ps(qv[c], load16(row + 16 * c), acc);
    const float a = _mm512_reduce_add_ps(acc);
    s[j] = a;
    mx = a > mx ? a : mx;
  }
  float total = 0.f;
  for (int64_t j = 0; j < it.n; ++j) s[j] = std::exp(s[j] - mx);
  for (int64_t j = 0; j < it.n; ++j) total += s[j];
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < it.n; ++j) {
    prefetch<T, D>(v, vs, it, j);
    const T* row = v + it.idx[j] * vs;
    const __m512 p = _mm512_set1_ps(s[j]);
    for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(p, load16(row + 16 * c), acc[c]);
  }
  const __m512 inv = _mm512_set1_ps(it.n ? 1.f / total : 0.f);
  for (int c = 0; c < C; ++c) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], inv));
}
#endif

template <typename T>
using Head = void (*)(const float*, const T*, int64_t, const T*, int64_t, Item, int64_t, float*, float*);

template <typename T>
Head<T> pick(int64_t dim, bool generic) {
#if CAPSAFE_AVX512
  if (!generic) {
    switch (dim) {
      case 32: return vector_head<T, 32>;
      case 64: return vector_head<T, 64>;
      case 80: return vector_head<T, 80>;
      case 96: return vector_head<T, 96>;
      case 128: return vector_head<T, 128>;
      case 256: return vector_head<T, 256>;
      default: break;
    }
  }
#endif
  return generic_head<T>;
}

template <typename T>
void run(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& valid, double scale,
         bool generic, at::Tensor& out) {
  const int64_t rows = q.size(0), heads = q.size(1), dim = q.size(2);
  const int64_t kv = k.size(1), positions = k.size(2), group = heads / kv;
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  const bool* mp = valid.data_ptr<bool>();
  T* op = out.data_ptr<T>();
  const int64_t k0 = k.stride(0), k1 = k.stride(1), k2 = k.stride(2);
  const int64_t v0 = v.stride(0), v1 = v.stride(1), v2 = v.stride(2), m0 = valid.stride(0);
  const float sc = static_cast<float>(scale);
  const Head<T> head = pick<T>(dim, generic);
  at::parallel_for(0, rows * kv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(positions), qf(dim), o(dim);
    std::vector<int64_t> idx(positions);
    int64_t row_of_idx = -1, n = 0;
    for (int64_t i = begin; i < end; ++i) {
      const int64_t r = i / kv, h = i % kv;
      if (r != row_of_idx) {
        const bool* m = mp + r * m0;
        n = 0;
        for (int64_t l = 0; l < positions; ++l)
          if (m[l]) idx[n++] = l;
        row_of_idx = r;
      }
      for (int64_t g = 0; g < group; ++g) {
        const T* qg = qp + (r * heads + h * group + g) * dim;
        for (int64_t d = 0; d < dim; ++d) qf[d] = to_float(qg[d]) * sc;
        head(qf.data(), kp + r * k0 + h * k1, k2, vp + r * v0 + h * v1, v2, Item{idx.data(), n}, dim, s.data(),
             o.data());
        T* og = op + (r * heads + h * group + g) * dim;
        for (int64_t d = 0; d < dim; ++d) og[d] = static_cast<T>(o[d]);
      }
    }
  });
}

}  // namespace

at::Tensor decode_attention(at::Tensor query, const at::Tensor& key, const at::Tensor& value,
                            const at::Tensor& valid, double scale, bool generic) {
  TORCH_CHECK(query.dim() == 3 && key.dim() == 4 && value.sizes() == key.sizes(), "decode_attention: shapes");
  TORCH_CHECK(query.size(0) == key.size(0) && query.size(2) == key.size(3), "decode_attention: rows or dim differ");
  TORCH_CHECK(key.size(1) > 0 && query.size(1) % key.size(1) == 0, "decode_attention: heads not grouped");
  TORCH_CHECK(key.stride(3) == 1 && value.stride(3) == 1, "decode_attention: keys/values' last dim not contiguous");
  TORCH_CHECK(valid.scalar_type() == at::kBool && valid.dim() == 2 && valid.size(0) == key.size(0) &&
                  valid.size(1) == key.size(2) && valid.stride(1) == 1,
              "decode_attention: valid must be (rows, positions) bool");
  TORCH_CHECK(query.scalar_type() == key.scalar_type() && key.scalar_type() == value.scalar_type(),
              "decode_attention: dtypes differ");
  TORCH_CHECK(query.device().is_cpu() && key.device().is_cpu() && value.device().is_cpu(), "decode_attention: CPU only");
  query = query.contiguous();
  auto out = at::empty_like(query);
  if (query.scalar_type() == at::kBFloat16) {
    run<at::BFloat16>(query, key, value, valid, scale, generic, out);
  } else {
    TORCH_CHECK(query.scalar_type() == at::kFloat, "decode_attention: float32 or bfloat16 only");
    run<float>(query, key, value, valid, scale, generic, out);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_attention", &decode_attention, "A decoding step's attention (see the file's comment)");
}
