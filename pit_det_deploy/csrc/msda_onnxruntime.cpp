// pit-det's fused deformable attention as an onnxruntime custom-op library: the op
// pit_det::MultiScaleDeformableAttention that `tools/deploy/export.py --msda fused` writes, registered
// by RegisterCustomOps (SessionOptions.register_custom_ops_library). The kernel is
// ms_deform_attn_forward.h, the PyTorch extension's forward pass, on onnxruntime's intra-op threads.
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

#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "ms_deform_attn_forward.h"

namespace {

using Ort::Custom::Tensor;

// The shared kernel's parallel_for on onnxruntime's intra-op thread pool: one call per task. An
// exception in a task (the pool's threads must not see one) is kept and rethrown on this thread.
struct SessionThreads {
  OrtKernelContext* context;

  template <typename F>
  void operator()(int64_t n, const F& fn) const {
    struct Job {
      const F* fn;
      std::exception_ptr error;
      std::mutex lock;
    } job{&fn, nullptr, {}};
    Ort::KernelContext(context).ParallelFor(
        [](void* data, size_t i) {
          auto* job = static_cast<Job*>(data);
          try {
            (*job->fn)(int64_t(i), int64_t(i) + 1);
          } catch (...) {
            const std::lock_guard<std::mutex> hold(job->lock);
            if (!job->error) job->error = std::current_exception();
          }
        },
        size_t(n), 0, &job);
    if (job.error) std::rethrow_exception(job.error);
  }
};

Ort::Status Forward(OrtKernelContext* context, const Tensor<float>& value, const Tensor<int64_t>& spatial_shapes,
                    const Tensor<int64_t>& level_start_index, const Tensor<float>& sampling_locations,
                    const Tensor<float>& attention_weights, Tensor<float>& output) {
  try {
    const std::string misfit = pit_det::check_shapes(value.Shape(), spatial_shapes.Shape(), level_start_index.Shape(),
                                                     sampling_locations.Shape(), attention_weights.Shape());
    if (!misfit.empty()) {
      return Ort::Status(("pit_det::MultiScaleDeformableAttention: " + misfit).c_str(), ORT_INVALID_ARGUMENT);
    }
    const pit_det::Dims d = pit_det::dims_of(value.Shape(), sampling_locations.Shape());
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
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {  // an onnxruntime older than the headers: every release has API version 1
    return api_base->GetApi(1)->CreateStatus(
        ORT_FAIL, "pit-det's fused-op library needs onnxruntime >= 1.21 (C API version 21)");
  }
  Ort::InitApi(api);
  try {
    // One domain and op for the process, as onnxruntime's examples keep them: every loaded model refers to them.
    static Ort::CustomOpDomain domain{"pit_det"};
    static std::unique_ptr<Ort::Custom::OrtLiteCustomOp> op{
        Ort::Custom::CreateLiteCustomOp("MultiScaleDeformableAttention", "CPUExecutionProvider", Forward)};
    static const bool added = (domain.Add(op.get()), true);
    (void)added;
    Ort::UnownedSessionOptions(options).Add(domain);
  } catch (const std::exception& e) {  // nothing may leave this C function
    return api->CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
  }
  return nullptr;
}
