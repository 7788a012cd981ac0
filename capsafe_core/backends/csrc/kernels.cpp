// capsafe's CPU kernels, built on first use by capsafe_core/backends/native.py (torch's C++ extension
// loader).
//
// Attention, each query to its own positions in one pass: the masked positions skipped, the softmax in
// fp32, keys and values read in place. For a decoding step (one query per row) it replaces two batched
// products of tiny matrices; for prompts, a block of queries at a time.
//
// attention(query, key, value, valid, scale, generic) -> out
//   query (rows, heads, queries, dim); key, value (rows, kv_heads, positions, dim); the last dimension of
//   each contiguous, other strides free; valid (rows, queries, positions) bool, True where a query
//   attends (the last dimension contiguous); out (rows, queries, heads, dim). float32 or bfloat16 (all
//   alike). A query attending to no position gets zeros. `generic` uses the portable loops even where
//   the vector ones exist (tests compare both).
//
// rms_norm(x, weight, eps) -> out: transformers' RMSNorm (LlamaRMSNorm and its copies) in one pass.
// argmax(x) -> indices: torch.argmax(x.float(), -1) of (rows, n) logits (greedy decoding), no upcast copy.
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

struct Item {  // the positions one query attends to
  const int64_t* idx;
  int64_t n;
};

// Scores s[0..n) become exp(s - max); returns the reciprocal of their sum (0 where there are none).
inline float softmax_scale(float* s, int64_t n, float max) {
  float total = 0.f;
  for (int64_t j = 0; j < n; ++j) s[j] = std::exp(s[j] - max);
  for (int64_t j = 0; j < n; ++j) total += s[j];
  return n ? 1.f / total : 0.f;
}

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
  const float inv = softmax_scale(s, it.n, mx);
  for (int64_t d = 0; d < dim; ++d) out[d] = 0.f;
  for (int64_t j = 0; j < it.n; ++j) {
    const T* row = v + it.idx[j] * vs;
    for (int64_t d = 0; d < dim; ++d) out[d] += s[j] * to_float(row[d]);
  }
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
  const float scale = softmax_scale(s, it.n, mx);
  __m512 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm512_setzero_ps();
  for (int64_t j = 0; j < it.n; ++j) {
    prefetch<T, D>(v, vs, it, j);
    const T* row = v + it.idx[j] * vs;
    const __m512 p = _mm512_set1_ps(s[j]);
    for (int c = 0; c < C; ++c) acc[c] = _mm512_fmadd_ps(p, load16(row + 16 * c), acc[c]);
  }
  const __m512 inv = _mm512_set1_ps(scale);
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
  const int64_t rows = q.size(0), heads = q.size(1), queries = q.size(2), dim = q.size(3);
  const int64_t kv = k.size(1), positions = k.size(2), group = heads / kv;
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  const bool* mp = valid.data_ptr<bool>();
  T* op = out.data_ptr<T>();  // (rows, queries, heads, dim), contiguous
  const int64_t q0 = q.stride(0), q1 = q.stride(1), q2 = q.stride(2);
  const int64_t k0 = k.stride(0), k1 = k.stride(1), k2 = k.stride(2);
  const int64_t v0 = v.stride(0), v1 = v.stride(1), v2 = v.stride(2);
  const int64_t m0 = valid.stride(0), m1 = valid.stride(1);
  const float sc = static_cast<float>(scale);
  const Head<T> head = pick<T>(dim, generic);
  at::parallel_for(0, rows * queries, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(positions), qf(dim), o(dim);
    std::vector<int64_t> idx(positions);
    for (int64_t i = begin; i < end; ++i) {  // one row's query: its positions, then every head
      const int64_t r = i / queries, t = i % queries;
      const bool* m = mp + r * m0 + t * m1;
      int64_t n = 0;
      for (int64_t l = 0; l < positions; ++l)
        if (m[l]) idx[n++] = l;
      for (int64_t hq = 0; hq < heads; ++hq) {
        const int64_t h = hq / group;
        const T* qh = qp + r * q0 + hq * q1 + t * q2;
        for (int64_t d = 0; d < dim; ++d) qf[d] = to_float(qh[d]) * sc;
        head(qf.data(), kp + r * k0 + h * k1, k2, vp + r * v0 + h * v1, v2, Item{idx.data(), n}, dim, s.data(),
             o.data());
        T* oh = op + ((r * queries + t) * heads + hq) * dim;
        for (int64_t d = 0; d < dim; ++d) oh[d] = static_cast<T>(o[d]);
      }
    }
  });
}

}  // namespace

at::Tensor attention(const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& valid,
                     double scale, bool generic) {
  TORCH_CHECK(query.dim() == 4 && key.dim() == 4 && value.sizes() == key.sizes(), "attention: shapes");
  TORCH_CHECK(query.size(0) == key.size(0) && query.size(3) == key.size(3), "attention: rows or dim differ");
  TORCH_CHECK(key.size(1) > 0 && query.size(1) % key.size(1) == 0, "attention: heads not grouped");
  TORCH_CHECK(query.stride(3) == 1 && key.stride(3) == 1 && value.stride(3) == 1,
              "attention: the last dimension must be contiguous");
  TORCH_CHECK(valid.scalar_type() == at::kBool && valid.dim() == 3 && valid.size(0) == query.size(0) &&
                  valid.size(1) == query.size(2) && valid.size(2) == key.size(2) && valid.stride(2) == 1,
              "attention: valid must be (rows, queries, positions) bool");
  TORCH_CHECK(query.scalar_type() == key.scalar_type() && key.scalar_type() == value.scalar_type(),
              "attention: dtypes differ");
  TORCH_CHECK(query.device().is_cpu() && key.device().is_cpu() && value.device().is_cpu(), "attention: CPU only");
  auto out = at::empty({query.size(0), query.size(2), query.size(1), query.size(3)}, query.options());
  if (query.scalar_type() == at::kBFloat16) {
    run<at::BFloat16>(query, key, value, valid, scale, generic, out);
  } else {
    TORCH_CHECK(query.scalar_type() == at::kFloat, "attention: float32 or bfloat16 only");
    run<float>(query, key, value, valid, scale, generic, out);
  }
  return out;
}

namespace {

// transformers' RMSNorm, one row at a time: in fp32, x * rsqrt(mean(x^2) + eps), rounded to the input's
// dtype, then times the weight (rounded again), as LlamaRMSNorm and its copies compute it.
template <typename T>
void rms_rows(const T* x, const T* w, T* out, int64_t rows, int64_t width, float eps) {
  at::parallel_for(0, rows, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> f(width);
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * width;
      float total = 0.f;
      for (int64_t d = 0; d < width; ++d) {
        f[d] = to_float(xr[d]);
        total += f[d] * f[d];
      }
      const float scale = 1.f / std::sqrt(total / static_cast<float>(width) + eps);
      T* o = out + r * width;
      for (int64_t d = 0; d < width; ++d)
        o[d] = static_cast<T>(to_float(w[d]) * to_float(static_cast<T>(f[d] * scale)));
    }
  });
}

}  // namespace

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.dim() >= 1 && weight.dim() == 1 && x.size(-1) == weight.size(0), "rms_norm: shapes");
  TORCH_CHECK(x.scalar_type() == weight.scalar_type() && x.device().is_cpu() && weight.device().is_cpu(),
              "rms_norm: dtypes or devices differ");
  const int64_t width = x.size(-1), rows = width ? x.numel() / width : 0;
  const at::Tensor flat = x.contiguous().view({rows, width});
  const at::Tensor w = weight.contiguous();
  auto out = at::empty({rows, width}, x.options());
  const float e = static_cast<float>(eps);
  if (x.scalar_type() == at::kBFloat16) {
    rms_rows<at::BFloat16>(flat.data_ptr<at::BFloat16>(), w.data_ptr<at::BFloat16>(), out.data_ptr<at::BFloat16>(),
                           rows, width, e);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kFloat, "rms_norm: float32 or bfloat16 only");
    rms_rows<float>(flat.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), rows, width, e);
  }
  return out.view(x.sizes());
}

namespace {

inline bool is_nan(float x) {  // by the bits: -ffast-math may fold std::isnan away
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return (u & 0x7fffffffu) > 0x7f800000u;
}

// torch.argmax of one row as float: the first index of the maximum, or of the first NaN.
template <typename T>
int64_t argmax_row(const T* x, int64_t n) {
  int64_t best = 0;
  float top = to_float(x[0]);
  if (is_nan(top)) return 0;
#if CAPSAFE_AVX512
  if (n >= 16) {  // the maximum by vectors (NaNs noticed), then its first index
    __m512 m = load16(x);
    __mmask16 nan = _mm512_cmp_ps_mask(m, m, _CMP_UNORD_Q);
    int64_t j = 16;
    for (; j + 16 <= n; j += 16) {
      const __m512 v = load16(x + j);
      nan |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
      m = _mm512_max_ps(m, v);
    }
    if (!nan) {
      top = _mm512_reduce_max_ps(m);
      for (; j < n; ++j) {
        const float v = to_float(x[j]);
        if (is_nan(v)) return j;  // the vectors had none
        top = std::max(top, v);
      }
      for (int64_t c = 0; c + 16 <= n; c += 16) {
        const __mmask16 eq = _mm512_cmp_ps_mask(load16(x + c), _mm512_set1_ps(top), _CMP_EQ_OQ);
        if (eq) return c + __builtin_ctz(eq);
      }
      for (int64_t c = n - n % 16; c < n; ++c)
        if (to_float(x[c]) == top) return c;
    }
  }
#endif
  for (int64_t j = 1; j < n; ++j) {
    const float v = to_float(x[j]);
    if (is_nan(v)) return j;
    if (v > top) {
      top = v;
      best = j;
    }
  }
  return best;
}

template <typename T>
void argmax_rows(const at::Tensor& x, at::Tensor& out) {
  const int64_t rows = x.size(0), n = x.size(1), stride = x.stride(0);
  const T* p = x.data_ptr<T>();
  int64_t* o = out.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) o[r] = argmax_row<T>(p + r * stride, n);
  });
}

}  // namespace

at::Tensor argmax(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) > 0 && x.stride(1) == 1 && x.device().is_cpu(),
              "argmax: (rows, n) on a CPU, the last dimension contiguous and not empty");
  auto out = at::empty({x.size(0)}, x.options().dtype(at::kLong));
  if (x.scalar_type() == at::kBFloat16) {
    argmax_rows<at::BFloat16>(x, out);
  } else {
    TORCH_CHECK(x.scalar_type() == at::kFloat, "argmax: float32 or bfloat16 only");
    argmax_rows<float>(x, out);
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("argmax", &argmax, "torch.argmax(x.float(), -1) of a (rows, n) tensor, without the float copy");
  m.def("rms_norm", &rms_norm, "transformers' RMSNorm in one pass (see rms_rows)");
  m.def("attention", &attention, "Attention of queries to their own positions (see the file's comment)");
}
