// Multi-scale deformable attention (Zhu et al., Deformable DETR, arXiv 2010.04159) on CPU, as
// pit-det's PyTorch extension: the forward pass of pit_det_deploy/csrc/ms_deform_attn_forward.h
// (shared with the runtime library of exported models; layouts and semantics there), its backward
// pass, and the checks that turn a bad call into a Python error.
//
// dtypes: value, output and grad_value are float64, float32, bfloat16 or float16; everything is
// computed and accumulated in the "op math" type (float for bfloat16 / float16), in which the
// sampling locations and attention weights also come: bfloat16 locations would be off by up to
// half a pixel on a 100-pixel map. Low-precision values are read and converted on the fly, never
// copied to float32.
#include <torch/extension.h>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "ms_deform_attn_forward.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

using pit_det::Corners;
using pit_det::Dims;

// torch's thread pool, as the shared kernel's parallel_for.
const auto torch_parallel_for = [](int64_t n, const auto& fn) { at::parallel_for(0, n, 1, fn); };

// grad_value is accumulated in acc_t (a float32 buffer for bfloat16 / float16 values: summing
// thousands of queries' contributions in bfloat16 would lose most of them).
template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
void backward_kernel(const scalar_t* value, const int64_t* shapes, const int64_t* starts,
                     const acc_t* loc, const acc_t* attn, const scalar_t* grad_out,
                     acc_t* grad_value, acc_t* grad_loc, acc_t* grad_attn, Dims d) {
  const int64_t pixel_stride = d.M * d.D;
  // Each (batch, head) owns a disjoint slice of grad_value, so threads split on it and the
  // scatter needs no atomics.
  at::parallel_for(0, d.B * d.M, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bm = begin; bm < end; ++bm) {
      const int64_t b = bm / d.M, m = bm % d.M;
      for (int64_t q = 0; q < d.Q; ++q) {
        const int64_t bq = b * d.Q + q;
        const scalar_t* g = grad_out + (bq * d.M + m) * d.D;
        int64_t s = (bq * d.M + m) * d.L * d.P;
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const int64_t base = ((b * d.S + starts[l]) * d.M + m) * d.D;
          for (int64_t p = 0; p < d.P; ++p, ++s) {
            const Corners<acc_t> c(loc[2 * s], loc[2 * s + 1], H, W);
            grad_attn[s] = 0;
            grad_loc[2 * s] = 0;
            grad_loc[2 * s + 1] = 0;
            if (!c.any) continue;
            acc_t ga = 0, gx = 0, gy = 0;
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const scalar_t* vk = value + base + c.offset[k] * pixel_stride;
              acc_t* gvk = grad_value + base + c.offset[k] * pixel_stride;
              const acc_t w = attn[s] * c.weight[k];
              acc_t dot = 0;
              for (int64_t ch = 0; ch < d.D; ++ch) {
                const acc_t gc = static_cast<acc_t>(g[ch]);
                dot += gc * static_cast<acc_t>(vk[ch]);
                gvk[ch] += w * gc;
              }
              ga += c.weight[k] * dot;
              gx += c.dweight_dx[k] * dot;
              gy += c.dweight_dy[k] * dot;
            }
            grad_attn[s] = ga;
            grad_loc[2 * s] = attn[s] * gx * W;  // x = loc_x * W - 0.5
            grad_loc[2 * s + 1] = attn[s] * gy * H;
          }
        }
      }
    }
  });
}

Dims check(const at::Tensor& value, const at::Tensor& shapes, const at::Tensor& starts,
           const at::Tensor& loc, const at::Tensor& attn) {
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu: tensors must be on the CPU");
  TORCH_CHECK(value.dim() == 4, "value must be (B, S, M, D), got ", value.sizes());
  TORCH_CHECK(loc.dim() == 6 && loc.size(5) == 2,
              "sampling_locations must be (B, Q, M, L, P, 2), got ", loc.sizes());
  const Dims d{value.size(0), value.size(1), value.size(2), value.size(3),
               loc.size(1), loc.size(3), loc.size(4)};
  TORCH_CHECK(loc.size(0) == d.B && loc.size(2) == d.M, "sampling_locations ", loc.sizes(),
              " do not match value ", value.sizes());
  TORCH_CHECK(attn.sizes() == loc.sizes().slice(0, 5), "attention_weights ", attn.sizes(),
              " do not match sampling_locations ", loc.sizes());
  TORCH_CHECK(shapes.scalar_type() == at::kLong && starts.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(shapes.dim() == 2 && shapes.size(0) == d.L && shapes.size(1) == 2 &&
                  starts.numel() == d.L,
              "spatial_shapes must be (L, 2) and level_start_index (L,) with L = ", d.L);
  const auto compute = at::toOpMathType(value.scalar_type());
  TORCH_CHECK(loc.scalar_type() == compute && attn.scalar_type() == compute,
              "sampling_locations and attention_weights must be ", compute, " for ", value.scalar_type(),
              " values, got ", loc.scalar_type(), " and ", attn.scalar_type());
  TORCH_CHECK(value.is_contiguous() && shapes.is_contiguous() && starts.is_contiguous() &&
                  loc.is_contiguous() && attn.is_contiguous(),
              "ms_deform_attn_cpu expects contiguous tensors");
  const std::string bad = pit_det::check_levels(d, shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>());
  TORCH_CHECK(bad.empty(), bad);
  return d;
}

at::Tensor ms_deform_attn_forward(const at::Tensor& value, const at::Tensor& shapes,
                                  const at::Tensor& starts, const at::Tensor& loc,
                                  const at::Tensor& attn) {
  const Dims d = check(value, shapes, starts, loc, attn);
  auto out = at::empty({d.B, d.Q, d.M * d.D}, value.options());
  const auto value_t = value.permute({0, 2, 1, 3}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto kernel = d.D == 32 ? pit_det::forward_kernel<scalar_t, 32, acc_t, decltype(torch_parallel_for)>
                            : pit_det::forward_kernel<scalar_t, 0, acc_t, decltype(torch_parallel_for)>;
    kernel(value_t.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(), starts.data_ptr<int64_t>(),
           loc.data_ptr<acc_t>(), attn.data_ptr<acc_t>(), out.data_ptr<scalar_t>(), d, torch_parallel_for);
  });
  return out;
}

std::vector<at::Tensor> ms_deform_attn_backward(const at::Tensor& value, const at::Tensor& shapes,
                                                const at::Tensor& starts, const at::Tensor& loc,
                                                const at::Tensor& attn,
                                                const at::Tensor& grad_out) {
  const Dims d = check(value, shapes, starts, loc, attn);
  TORCH_CHECK(grad_out.is_contiguous() && grad_out.scalar_type() == value.scalar_type() &&
                  grad_out.numel() == d.B * d.Q * d.M * d.D,
              "grad_output must be a contiguous (B, Q, M * D) tensor");
  auto grad_value = at::zeros(value.sizes(), value.options().dtype(loc.scalar_type()));
  auto grad_loc = at::empty_like(loc);
  auto grad_attn = at::empty_like(attn);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(), "ms_deform_attn_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_kernel<scalar_t>(value.data_ptr<scalar_t>(), shapes.data_ptr<int64_t>(),
                              starts.data_ptr<int64_t>(), loc.data_ptr<acc_t>(),
                              attn.data_ptr<acc_t>(), grad_out.data_ptr<scalar_t>(),
                              grad_value.data_ptr<acc_t>(), grad_loc.data_ptr<acc_t>(),
                              grad_attn.data_ptr<acc_t>(), d);
  });
  return {grad_value.to(value.scalar_type()), grad_loc, grad_attn};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ms_deform_attn_forward, "multi-scale deformable attention, CPU forward");
  m.def("backward", &ms_deform_attn_backward,
        "multi-scale deformable attention, CPU backward: (grad_value, grad_loc, grad_attn)");
}
