// Fused IG attribute step on CPU (ATen + OpenMP through at::parallel_for).
//
//   S[b, u] = sum_{t: mask[b,t]} sum_{i in u} X[b,t,i] * ((sum_k w_k G[k,b,t,:]) W)[t,i]
//
// Same contract as the Triton kernel (attprune/ops/triton/ig_attribute.py) and the PyTorch
// reference (attprune/ops/reference.py); its fake (meta) implementation is in attprune/ops/native.py. Examples are split across threads; each example's
// tokens go in blocks of kTokenBlock rows: the step sum of a gradient block, one GEMM with
// the weight (single-threaded inside the parallel region), then the epilogue multiplies by
// the activation and adds over the block's real tokens into a per-feature row; the unit sums
// close the example. The summed gradient [B, T, O] and the [B, T, I] product are never
// materialised: per thread, one [kTokenBlock, O] and one [kTokenBlock, I] buffer.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace attprune {
namespace {

constexpr int64_t kTokenBlock = 64;

void check_inputs(const at::Tensor& grads, const at::Tensor& step_weights, const at::Tensor& weight,
                  const at::Tensor& x, const at::Tensor& mask, int64_t unit_size) {
  TORCH_CHECK(grads.dim() == 4, "grads must be [steps, batch, tokens, out], got ", grads.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == grads.size(3), "weight must be [out, in] with out = ",
              grads.size(3), ", got ", weight.sizes());
  TORCH_CHECK(x.dim() == 3 && x.size(0) == grads.size(1) && x.size(1) == grads.size(2) &&
                  x.size(2) == weight.size(1),
              "x must be [batch, tokens, in], got ", x.sizes());
  TORCH_CHECK(mask.dim() == 2 && mask.size(0) == x.size(0) && mask.size(1) == x.size(1),
              "mask must be [batch, tokens], got ", mask.sizes());
  TORCH_CHECK(step_weights.numel() == grads.size(0), "one step weight per step");
  TORCH_CHECK(unit_size > 0 && weight.size(1) % unit_size == 0, "unit_size must divide the input features");
  for (const auto* t : {&grads, &step_weights, &weight, &x, &mask}) {
    TORCH_CHECK(t->device().is_cpu(), "the native CPU op takes CPU tensors");
  }
}

}  // namespace

at::Tensor ig_attribute_cpu(const at::Tensor& grads, const at::Tensor& step_weights, const at::Tensor& weight,
                            const at::Tensor& x, const at::Tensor& mask, int64_t unit_size) {
  check_inputs(grads, step_weights, weight, x, mask, unit_size);
  const int64_t steps = grads.size(0), batch = grads.size(1), tokens = grads.size(2), d_out = grads.size(3);
  const int64_t d_in = weight.size(1), units = d_in / unit_size;
  const auto f32 = at::kFloat;
  const at::Tensor g = grads.to(f32).contiguous();
  const at::Tensor w = weight.to(f32).contiguous();
  const at::Tensor xs = x.to(f32).contiguous();
  const at::Tensor mk = mask.to(f32).contiguous();
  const at::Tensor sw = step_weights.to(f32).contiguous();
  at::Tensor out = at::zeros({batch, units}, x.options().dtype(f32));

  const float* g_ptr = g.data_ptr<float>();
  const float* x_ptr = xs.data_ptr<float>();
  const float* m_ptr = mk.data_ptr<float>();
  const float* sw_ptr = sw.data_ptr<float>();
  float* out_ptr = out.data_ptr<float>();
  const int64_t step_stride = batch * tokens * d_out;

  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    at::Tensor g_bar = at::empty({kTokenBlock, d_out}, g.options());
    at::Tensor product = at::empty({kTokenBlock, d_in}, g.options());
    std::vector<float> per_feature(d_in);
    for (int64_t b = begin; b < end; ++b) {
      std::fill(per_feature.begin(), per_feature.end(), 0.0f);
      float* feat = per_feature.data();
      for (int64_t t0 = 0; t0 < tokens; t0 += kTokenBlock) {
        const int64_t rows = std::min(kTokenBlock, tokens - t0);
        // prologue: the step-weighted sum of this block's gradients
        float* gb = g_bar.data_ptr<float>();
        const float* first = g_ptr + (b * tokens + t0) * d_out;
        const int64_t n = rows * d_out;
        const float w0 = sw_ptr[0];
        for (int64_t j = 0; j < n; ++j) gb[j] = w0 * first[j];
        for (int64_t k = 1; k < steps; ++k) {
          const float* gk = first + k * step_stride;
          const float wk = sw_ptr[k];
          for (int64_t j = 0; j < n; ++j) gb[j] += wk * gk[j];
        }
        at::Tensor p = product.narrow(0, 0, rows);
        at::mm_out(p, g_bar.narrow(0, 0, rows), w);
        // epilogue: x the activation, summed over the block's real tokens
        const float* pp = p.data_ptr<float>();
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t row = b * tokens + t0 + r;
          const float keep = m_ptr[row];
          if (keep == 0.0f) continue;
          const float* xr = x_ptr + row * d_in;
          const float* pr = pp + r * d_in;
          for (int64_t j = 0; j < d_in; ++j) feat[j] += keep * xr[j] * pr[j];
        }
      }
      float* s = out_ptr + b * units;  // the example's units: sums of unit_size features
      for (int64_t u = 0; u < units; ++u) {
        float acc = 0.0f;
        for (int64_t j = u * unit_size; j < (u + 1) * unit_size; ++j) acc += feat[j];
        s[u] = acc;
      }
    }
  });
  return out;
}

TORCH_LIBRARY(attprune, m) {
  m.def("ig_attribute(Tensor grads, Tensor step_weights, Tensor weight, Tensor x, Tensor mask, int unit_size) "
        "-> Tensor");
}

TORCH_LIBRARY_IMPL(attprune, CPU, m) { m.impl("ig_attribute", &ig_attribute_cpu); }

}  // namespace attprune
