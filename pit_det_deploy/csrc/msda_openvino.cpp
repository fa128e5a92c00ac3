// pit-det's fused deformable attention as an OpenVINO extension: the op
// pit_det::MultiScaleDeformableAttention, and the ONNX frontend's mapping from the node that
// `tools/deploy/export.py --msda fused` writes (domain "pit_det"). The kernel is
// ms_deform_attn_forward.h, the PyTorch extension's forward pass, on OpenVINO's own threads.
//
// Inputs (fp32 and int64, layouts in ms_deform_attn_forward.h): value (B, S, M, D), spatial_shapes
// (L, 2), level_start_index (L,), sampling_locations (B, Q, M, L, P, 2), attention_weights
// (B, Q, M, L, P). Output: (B, Q, M * D) fp32. Shapes may be dynamic.
#include <openvino/core/extension.hpp>
#include <openvino/core/op_extension.hpp>
#include <openvino/core/parallel.hpp>
#include <openvino/frontend/onnx/extension/op.hpp>
#include <openvino/op/op.hpp>

#include <vector>

#include "ms_deform_attn_forward.h"

namespace pit_det {

class MultiScaleDeformableAttention : public ov::op::Op {
public:
  OPENVINO_OP("MultiScaleDeformableAttention", "pit_det");

  MultiScaleDeformableAttention() = default;
  explicit MultiScaleDeformableAttention(const ov::OutputVector& args) : Op(args) {
    constructor_validate_and_infer_types();
  }

  void validate_and_infer_types() override {
    NODE_VALIDATION_CHECK(this, get_input_size() == 5, "takes 5 inputs, got ", get_input_size());
    const auto f32 = ov::element::f32, i64 = ov::element::i64;
    NODE_VALIDATION_CHECK(this,
                          get_input_element_type(0) == f32 && get_input_element_type(3) == f32 &&
                              get_input_element_type(4) == f32,
                          "value, sampling_locations and attention_weights must be f32");
    // int64 in the ONNX graph; the CPU plugin turns int64 tensors into int32 when it compiles.
    for (size_t i : {1, 2}) {
      NODE_VALIDATION_CHECK(this, get_input_element_type(i) == i64 || get_input_element_type(i) == ov::element::i32,
                            "spatial_shapes and level_start_index must be integers");
    }
    const auto& value = get_input_partial_shape(0);
    const auto& loc = get_input_partial_shape(3);
    ov::PartialShape out = ov::PartialShape::dynamic(3);
    if (value.rank().is_static() && loc.rank().is_static()) {
      NODE_VALIDATION_CHECK(this, value.rank().get_length() == 4, "value must be (B, S, M, D)");
      NODE_VALIDATION_CHECK(this, loc.rank().get_length() == 6, "sampling_locations must be (B, Q, M, L, P, 2)");
      out = ov::PartialShape{value[0], loc[1], value[2] * value[3]};
    }
    set_output_type(0, f32, out);
  }

  std::shared_ptr<ov::Node> clone_with_new_inputs(const ov::OutputVector& new_args) const override {
    check_new_args_count(this, new_args);
    return std::make_shared<MultiScaleDeformableAttention>(new_args);
  }

  bool visit_attributes(ov::AttributeVisitor&) override { return true; }  // no attributes

  bool has_evaluate() const override { return true; }

  bool evaluate(ov::TensorVector& outputs, const ov::TensorVector& inputs) const override {
    std::vector<std::vector<int64_t>> shape(5);
    for (size_t i = 0; i < 5; ++i) shape[i].assign(inputs[i].get_shape().begin(), inputs[i].get_shape().end());
    const std::string misfit = check_shapes(shape[0], shape[1], shape[2], shape[3], shape[4]);
    OPENVINO_ASSERT(misfit.empty(), "pit_det::MultiScaleDeformableAttention: ", misfit);
    const Dims d = dims_of(shape[0], shape[3]);
    const std::vector<int64_t> shape_data = as_int64(inputs[1]), start_data = as_int64(inputs[2]);
    const int64_t *shapes = shape_data.data(), *starts = start_data.data();
    const std::string bad = check_levels(d, shapes, starts);
    OPENVINO_ASSERT(bad.empty(), "pit_det::MultiScaleDeformableAttention: ", bad);
    outputs[0].set_shape(ov::Shape{size_t(d.B), size_t(d.Q), size_t(d.M * d.D)});
    std::vector<float> scratch(d.B * d.S * d.M * d.D);
    // OpenVINO's threads (the compiled model's INFERENCE_NUM_THREADS), each taking one range.
    const auto ov_parallel_for = [](int64_t n, const auto& fn) {
      ov::parallel_nt(0, [&](int thread, int threads) { fn(n * thread / threads, n * (thread + 1) / threads); });
    };
    forward_f32(inputs[0].data<const float>(), shapes, starts, inputs[3].data<const float>(),
                inputs[4].data<const float>(), outputs[0].data<float>(), scratch.data(), d, ov_parallel_for);
    return true;
  }

private:
  static std::vector<int64_t> as_int64(const ov::Tensor& t) {
    if (t.get_element_type() == ov::element::i64) {
      const auto* p = t.data<const int64_t>();
      return {p, p + t.get_size()};
    }
    const auto* p = t.data<const int32_t>();
    return {p, p + t.get_size()};
  }
};

}  // namespace pit_det

OPENVINO_CREATE_EXTENSIONS(std::vector<ov::Extension::Ptr>(
    {std::make_shared<ov::OpExtension<pit_det::MultiScaleDeformableAttention>>(),
     std::make_shared<ov::frontend::onnx::OpExtension<pit_det::MultiScaleDeformableAttention>>(
         "MultiScaleDeformableAttention", "pit_det")}));
