// pit-det's fused deformable attention as a plain C function, for runtimes that call a shared
// library through a C ABI (pit_det_deploy.fused: onnxruntime's op). The kernel is
// ms_deform_attn_forward.h, the PyTorch extension's forward pass; threads are std::threads.
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "ms_deform_attn_forward.h"

namespace {

// fn over [0, n) in `threads` contiguous ranges, the calling thread taking the first.
struct ThreadSplit {
  int threads;
  template <typename F>
  void operator()(int64_t n, const F& fn) const {
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, n));
    std::vector<std::thread> pool;
    for (int64_t i = 1; i < parts; ++i) pool.emplace_back([&, i] { fn(n * i / parts, n * (i + 1) / parts); });
    fn(0, n / parts);
    for (auto& t : pool) t.join();
  }
};

}  // namespace

extern "C" {

// Returns 0, or 1 with a message in `error` (at most error_size bytes, NUL-terminated) when the
// level shapes do not fit value. dims = {B, S, M, D, Q, L, P}; `scratch` holds B * S * M * D floats.
int pit_det_msda_forward_f32(const float* value, const int64_t* spatial_shapes, const int64_t* level_start_index,
                             const float* sampling_locations, const float* attention_weights, float* output,
                             float* scratch, const int64_t* dims, int threads, char* error, int64_t error_size) {
  const pit_det::Dims d{dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], dims[6]};
  const std::string bad = pit_det::check_levels(d, spatial_shapes, level_start_index);
  if (!bad.empty()) {
    std::strncpy(error, bad.c_str(), error_size - 1);
    error[error_size - 1] = '\0';
    return 1;
  }
  pit_det::forward_f32(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, output,
                       scratch, d, ThreadSplit{threads > 0 ? threads : 1});
  return 0;
}

}  // extern "C"
