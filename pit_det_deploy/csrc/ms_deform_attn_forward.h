// Multi-scale deformable attention's forward pass (Zhu et al., Deformable DETR, arXiv 2010.04159),
// written once for every host that runs it: pit-det's PyTorch extension
// (pit_det/ops/csrc/ms_deform_attn_cpu.cpp) and the runtime libraries of exported models
// (msda_onnxruntime.cpp, msda_openvino.cpp). It depends on nothing but the C++ standard library;
// each host brings its own thread pool as `parallel_for`.
//
// One pass per (query, head): bilinear samples from every level are weighted by their attention and
// summed straight into the output row, so nothing of size queries x heads x levels x points x
// channels is ever materialised. mmcv's CPU fallback (grid_sample per level, stack, multiply, sum)
// writes and rereads four such tensors, and on a memory-bound CPU that traffic is most of its time.
//
// Semantics are those of mmcv's CUDA kernel and of grid_sample(align_corners=False,
// padding_mode='zeros'): pixel centres sit at (i + 0.5) / size and corners outside the map read zero.
//
// Layouts (all contiguous):
//   value               (B, S, M, D)        S = sum over levels of H_l * W_l
//   spatial_shapes      (L, 2) int64        (H_l, W_l)
//   level_start_index   (L,)   int64
//   sampling_locations  (B, Q, M, L, P, 2)  (x, y) in [0, 1]
//   attention_weights   (B, Q, M, L, P)
//   output              (B, Q, M * D)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace pit_det {

struct Dims {
  int64_t B, S, M, D, Q, L, P;
};

// Bilinear corners of one sample: flat pixel offsets within the level and their weights.
// Corners outside the map are flagged invalid and never read, as with zero padding.
template <typename scalar_t>
struct Corners {
  int64_t offset[4];
  scalar_t weight[4];
  scalar_t dweight_dx[4];  // d weight / d x (pixel units)
  scalar_t dweight_dy[4];
  bool valid[4];
  bool any;

  Corners(scalar_t loc_x, scalar_t loc_y, int64_t H, int64_t W) {
    const scalar_t x = loc_x * W - scalar_t(0.5);
    const scalar_t y = loc_y * H - scalar_t(0.5);
    any = y > -1 && x > -1 && y < H && x < W;  // false for NaN as well
    if (!any) return;
    const int64_t x0 = static_cast<int64_t>(std::floor(x));
    const int64_t y0 = static_cast<int64_t>(std::floor(y));
    const scalar_t lx = x - x0, ly = y - y0, hx = 1 - lx, hy = 1 - ly;
    const int64_t xs[4] = {x0, x0 + 1, x0, x0 + 1};
    const int64_t ys[4] = {y0, y0, y0 + 1, y0 + 1};
    const scalar_t w[4] = {hy * hx, hy * lx, ly * hx, ly * lx};
    const scalar_t dx[4] = {-hy, hy, -ly, ly};
    const scalar_t dy[4] = {-hx, -lx, hx, lx};
    for (int c = 0; c < 4; ++c) {
      valid[c] = xs[c] >= 0 && xs[c] < W && ys[c] >= 0 && ys[c] < H;
      offset[c] = valid[c] ? ys[c] * W + xs[c] : 0;
      weight[c] = valid[c] ? w[c] : scalar_t(0);
      dweight_dx[c] = valid[c] ? dx[c] : scalar_t(0);
      dweight_dy[c] = valid[c] ? dy[c] : scalar_t(0);
    }
  }
};

// The level facts that the kernels rely on: "" when they hold, else what is wrong. Every host
// checks them before it calls a kernel, since a level past the end of value reads out of bounds.
// (H <= (S - start) / W is H * W <= S - start without the product, which could overflow.)
inline std::string check_levels(const Dims& d, const int64_t* shapes, const int64_t* starts) {
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
    if (!(H > 0 && W > 0 && starts[l] >= 0 && starts[l] <= d.S && H <= (d.S - starts[l]) / W)) {
      return "level " + std::to_string(l) + " of spatial_shapes / level_start_index lies outside value";
    }
  }
  return "";
}

inline std::string shape_string(const std::vector<int64_t>& shape) {
  std::string text = "(";
  for (size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

// The runtimes' check of the five inputs' shapes against the layouts above: "" when they fit
// together, else a message naming all five. (The PyTorch extension has its own, TORCH_CHECK.)
inline std::string check_shapes(const std::vector<int64_t>& value, const std::vector<int64_t>& spatial_shapes,
                                const std::vector<int64_t>& level_start_index,
                                const std::vector<int64_t>& sampling_locations,
                                const std::vector<int64_t>& attention_weights) {
  const auto& v = value;
  const auto& loc = sampling_locations;
  const bool fit = v.size() == 4 && loc.size() == 6 && loc[0] == v[0] && loc[2] == v[2] && loc[5] == 2 &&
                   attention_weights == std::vector<int64_t>(loc.begin(), loc.end() - 1) &&
                   spatial_shapes == std::vector<int64_t>{loc[3], 2} &&
                   level_start_index == std::vector<int64_t>{loc[3]};
  if (fit) return "";
  return "value " + shape_string(value) + ", spatial_shapes " + shape_string(spatial_shapes) +
         ", level_start_index " + shape_string(level_start_index) + ", sampling_locations " +
         shape_string(sampling_locations) + " and attention_weights " + shape_string(attention_weights) +
         " do not fit (B, S, M, D), (L, 2), (L,), (B, Q, M, L, P, 2), (B, Q, M, L, P)";
}

// The sizes of inputs that check_shapes accepted.
inline Dims dims_of(const std::vector<int64_t>& value, const std::vector<int64_t>& sampling_locations) {
  return Dims{value[0], value[1], value[2], value[3], sampling_locations[1], sampling_locations[3],
              sampling_locations[4]};
}

// value_t is value transposed to (B, M, S, D): the samples of one head then read a table of
// S * D values (700 KB for PiT-S at 400 x 667) that stays in cache while that head is swept.
// kD > 0 fixes the channels per head at compile time (32 in every Deformable DETR config:
// 256 channels / 8 heads), so the accumulator lives in vector registers. Values are read as
// scalar_t and converted on the fly; sums are kept in acc_t (float for bfloat16 / float16).
// `parallel_for(n, fn)` calls fn(begin, end) over disjoint ranges covering [0, n).
template <typename scalar_t, int kD, typename acc_t, typename ParallelFor>
void forward_kernel(const scalar_t* __restrict__ value_t, const int64_t* shapes, const int64_t* starts,
                    const acc_t* __restrict__ loc, const acc_t* __restrict__ attn,
                    scalar_t* __restrict__ out, Dims d, const ParallelFor& parallel_for) {
  const int64_t D = kD > 0 ? kD : d.D;
  const int64_t chunk = 64;  // queries per task
  const int64_t chunks = (d.Q + chunk - 1) / chunk;
  parallel_for(d.B * d.M * chunks, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(kD > 0 ? 0 : D);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bm = task / chunks, b = bm / d.M, m = bm % d.M;
      const int64_t q_end = std::min(d.Q, (task % chunks + 1) * chunk);
      for (int64_t q = (task % chunks) * chunk; q < q_end; ++q) {
        const int64_t bq = b * d.Q + q;
        acc_t fixed[kD > 0 ? kD : 1];
        acc_t* acc = kD > 0 ? fixed : buffer.data();
        for (int64_t ch = 0; ch < D; ++ch) acc[ch] = 0;
        int64_t s = (bq * d.M + m) * d.L * d.P;  // first sample of this (query, head)
        for (int64_t l = 0; l < d.L; ++l) {
          const int64_t H = shapes[2 * l], W = shapes[2 * l + 1];
          const scalar_t* v = value_t + (bm * d.S + starts[l]) * D;
          for (int64_t p = 0; p < d.P; ++p, ++s) {
            const Corners<acc_t> c(loc[2 * s], loc[2 * s + 1], H, W);
            if (!c.any) continue;
            for (int k = 0; k < 4; ++k) {
              if (!c.valid[k]) continue;
              const acc_t w = attn[s] * c.weight[k];
              const scalar_t* vk = v + c.offset[k] * D;
              for (int64_t ch = 0; ch < D; ++ch) acc[ch] += w * static_cast<acc_t>(vk[ch]);
            }
          }
        }
        scalar_t* o = out + (bq * d.M + m) * D;
        for (int64_t ch = 0; ch < D; ++ch) o[ch] = static_cast<scalar_t>(acc[ch]);
      }
    }
  });
}

// (B, S, M, D) -> (B, M, S, D), the layout forward_kernel reads.
template <typename scalar_t>
void heads_first(const scalar_t* value, scalar_t* value_t, const Dims& d) {
  for (int64_t b = 0; b < d.B; ++b)
    for (int64_t s = 0; s < d.S; ++s)
      for (int64_t m = 0; m < d.M; ++m)
        std::copy_n(value + ((b * d.S + s) * d.M + m) * d.D, d.D, value_t + ((b * d.M + m) * d.S + s) * d.D);
}

// The forward pass on fp32 tensors in the layouts above, for the runtimes: transposes value into
// `scratch` (B * S * M * D floats) and dispatches on D.
template <typename ParallelFor>
void forward_f32(const float* value, const int64_t* shapes, const int64_t* starts, const float* loc,
                 const float* attn, float* out, float* scratch, const Dims& d, const ParallelFor& parallel_for) {
  heads_first(value, scratch, d);
  if (d.D == 32) {
    forward_kernel<float, 32, float>(scratch, shapes, starts, loc, attn, out, d, parallel_for);
  } else {
    forward_kernel<float, 0, float>(scratch, shapes, starts, loc, attn, out, d, parallel_for);
  }
}

}  // namespace pit_det
