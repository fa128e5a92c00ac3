// pit-det's fused deformable attention as an onnxruntime custom-op library: the op
// pit_det::MultiScaleDeformableAttention that `tools/deploy/export.py --msda fused` writes, registered
// by RegisterCustomOps (SessionOptions.register_custom_ops_library). The kernel is
// ms_deform_attn_forward.h, the PyTorch extension's forward pass, on the session's intra-op threads.
//
// Built against onnxruntime's C API headers of API version 21 (onnxruntime 1.21); onnxruntime keeps
// its C API backward compatible, so later releases load it (pit_det_deploy.fused).
//
// Inputs (float32 and int64, layouts in ms_deform_attn_forward.h): value (B, S, M, D), spatial_shapes
// (L, 2), level_start_index (L,), sampling_locations (B, Q, M, L, P, 2), attention_weights
// (B, Q, M, L, P). Output: (B, Q, M * D) float32.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#undef ORT_API_MANUAL_INIT
#include <onnxruntime_lite_custom_op.h>

#include <memory>
#include <string>
#include <vector>

#include "ms_deform_attn_forward.h"

namespace {

using Ort::Custom::Tensor;

// The shared kernel's parallel_for on onnxruntime's intra-op thread pool: one call per task.
struct SessionThreads {
  OrtKernelContext* context;

  template <typename F>
  void operator()(int64_t n, const F& fn) const {
    Ort::KernelContext(context).ParallelFor(
        [](void* task_fn, size_t i) { (*static_cast<const F*>(task_fn))(int64_t(i), int64_t(i) + 1); }, size_t(n), 0,
        const_cast<F*>(&fn));
  }
};

Ort::Status Forward(OrtKernelContext* context, const Tensor<float>& value, const Tensor<int64_t>& spatial_shapes,
                    const Tensor<int64_t>& level_start_index, const Tensor<float>& sampling_locations,
                    const Tensor<float>& attention_weights, Tensor<float>& output) {
  try {
    const std::vector<int64_t>& v = value.Shape();
    const std::vector<int64_t>& loc = sampling_locations.Shape();
    if (v.size() != 4 || loc.size() != 6 || loc[0] != v[0] || loc[2] != v[2] || loc[5] != 2 ||
        attention_weights.Shape() != std::vector<int64_t>(loc.begin(), loc.end() - 1) ||
        spatial_shapes.Shape() != std::vector<int64_t>{loc[3], 2} || level_start_index.Shape() != std::vector<int64_t>{loc[3]}) {
      return Ort::Status(("pit_det::MultiScaleDeformableAttention: value " + value.Shape2Str() + ", spatial_shapes " +
                          spatial_shapes.Shape2Str() + ", level_start_index " + level_start_index.Shape2Str() +
                          ", sampling_locations " + sampling_locations.Shape2Str() + " and attention_weights " +
                          attention_weights.Shape2Str() +
                          " do not fit (B, S, M, D), (L, 2), (L,), (B, Q, M, L, P, 2), (B, Q, M, L, P)")
                             .c_str(),
                         ORT_INVALID_ARGUMENT);
    }
    const pit_det::Dims d{v[0], v[1], v[2], v[3], loc[1], loc[3], loc[4]};
    const std::string bad = pit_det::check_levels(d, spatial_shapes.Data(), level_start_index.Data());
    if (!bad.empty()) return Ort::Status(("pit_det::MultiScaleDeformableAttention: " + bad).c_str(), ORT_INVALID_ARGUMENT);
    float* out = output.Allocate({d.B, d.Q, d.M * d.D});
    std::vector<float> scratch(d.B * d.S * d.M * d.D);
    pit_det::forward_f32(value.Data(), spatial_shapes.Data(), level_start_index.Data(), sampling_locations.Data(),
                         attention_weights.Data(), out, scratch.data(), d, SessionThreads{context});
    return Ort::Status{nullptr};
  } catch (const std::exception& e) {  // onnxruntime's C++ API throws Ort::Exception
    return Ort::Status(e.what(), ORT_RUNTIME_EXCEPTION);
  }
}

}  // namespace

extern "C" OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(ORT_API_VERSION));
  // One domain and op for the process, as onnxruntime's examples keep them: sessions refer to them.
  static Ort::CustomOpDomain domain{"pit_det"};
  static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
      Ort::Custom::CreateLiteCustomOp("MultiScaleDeformableAttention", "CPUExecutionProvider", Forward)};
  static const bool added = (domain.Add(op.get()), true);
  (void)added;
  try {
    Ort::UnownedSessionOptions(options).Add(domain);
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
  }
  return nullptr;
}
