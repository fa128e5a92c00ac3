"""Break the code a test guards and watch the test fail: every test must be able to fail.

    python tests/mutations.py            # every mutation below
    python tests/mutations.py on_map     # the ones whose name contains 'on_map'

Each mutation replaces one exact piece of a source file (it must occur there once), runs the
tests that guard it, and restores the file whatever happens. A mutation the tests do not catch is
printed as SURVIVED and the script exits with 1. Add one whenever a test is written for a bug.
"""

import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Tuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    name: str
    path: str  # relative to the repository root
    old: str
    new: str
    tests: Tuple[str, ...]  # pytest node ids or files


MUTATIONS = [
    Mutation(
        'resize_rounds_a_strip_to_zero_pixels',
        'pit_det/datasets/transforms.py',
        'if new_w >= 1 and new_h >= 1:',
        'if True:',
        ('tests/test_any_image_size.py::test_predict_and_train_on_images_with_few_tokens[r50]',),
    ),
    Mutation(
        'resize_strip_boxes_scaled_by_the_nominal_factor',
        'pit_det/datasets/transforms.py',
        "results['scale_factor'] = (img.shape[1] / w, img.shape[0] / h)",
        "results['scale_factor'] = (img.shape[1] / w, img.shape[1] / w)",
        ('tests/test_any_image_size.py::test_predict_and_train_on_images_with_few_tokens[r50]',),
    ),
    Mutation(
        'encoder_attends_to_padding',
        'pit_det/models/deformable_detr.py',
        '                key_padding_mask=feat_mask,\n',
        '                key_padding_mask=None,\n',
        ('tests/test_any_image_size.py::test_padded_batches_give_exactly_mmdets_results_and_losses[pit_s]',),
    ),
    Mutation(
        'table5_gap_threshold',
        'pit_det/analysis/table5.py',
        "verdict = 'beyond' if abs(diff) > noise else 'within'",
        "verdict = 'beyond' if abs(diff) > noise / 2 else 'within'",
        ('tests/test_table5.py::test_seeds_give_mean_and_sd_and_gaps_count_only_beyond_their_noise',),
    ),
    Mutation(
        'table5_population_sd',
        'pit_det/analysis/table5.py',
        'statistics.stdev(values)',
        'statistics.pstdev(values)',
        ('tests/test_table5.py::test_seeds_give_mean_and_sd_and_gaps_count_only_beyond_their_noise',),
    ),
    Mutation(
        'sampling_on_map_everywhere',
        'pit_det/analysis/sampling.py',
        'return ((loc >= 0) & (loc <= 1)).all(dim=-1)',
        'return torch.ones_like(loc[..., 0], dtype=torch.bool)',
        ('tests/test_sampling.py::test_off_map_samples_count_in_the_share_not_in_the_distance',),
    ),
    Mutation(
        'sampling_distance_counts_off_map',
        'pit_det/analysis/sampling.py',
        "weight = record['attention_weights'] * on_map(record)",
        "weight = record['attention_weights']",
        ('tests/test_sampling.py::test_off_map_samples_count_in_the_share_not_in_the_distance',),
    ),
    Mutation(
        'run_tool_hides_bugs',
        'pit_det_deploy/errors.py',
        'except (*user_errors, *PATH_ERRORS) as err:',
        'except Exception as err:',
        ('tests/test_deploy_errors.py::test_other_errors_keep_their_traceback',),
    ),
    Mutation(
        'msda_gpu_branch_by_device_not_is_cuda',
        'pit_det/ops/ms_deform_attn.py',
        "return 'cuda' if tensor.is_cuda else tensor.device.type",
        'return tensor.device.type',
        ('tests/test_cuda_branch.py::test_train_and_test_step_reach_no_mmcv_cuda_op',),
    ),
    Mutation(
        'msda_fast_ignores_mmcv_build',
        'pit_det/ops/ms_deform_attn.py',
        "if impl == 'triton' or not mmcv_has_cuda_ops():",
        "if impl == 'triton':",
        ('tests/test_msda.py::test_resolve_names_the_kernel_of_each_impl_on_each_device',),
    ),
    Mutation(
        'msda_resolve_logs_every_call',
        'pit_det/ops/ms_deform_attn.py',
        '        _resolved[impl, kind] = kernel\n',
        '',
        ('tests/test_msda.py::test_resolve_logs_each_answer_once',),
    ),
    Mutation(
        'table5_normal_bar_for_three_seeds',
        'pit_det/analysis/table5.py',
        'float(student_t.ppf(0.975, n_a + n_b - 2))',
        '2.0',
        ('tests/test_table5.py::test_seeds_give_mean_and_sd_and_gaps_count_only_beyond_their_noise',),
    ),
    Mutation(
        'drop_path_unscaled',
        'pit_det/models/layers.py',
        'return x * mask.div_(keep)',
        'return x * mask',
        ('tests/test_backbones.py::test_drop_path_and_initialisation_make_timms_random_draws',),
    ),
    Mutation(
        'pit_det_imports_timm',
        'pit_det/models/layers.py',
        'from torch import nn\n',
        'from torch import nn\nimport timm  # noqa: F401\n',
        ('tests/test_integration.py::test_importing_pit_det_registers_its_modules_and_changes_nothing_else',),
    ),
    Mutation(
        'runtime_load_error_hides_metadata_bugs',
        'pit_det_deploy/runtime.py',
        "        return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])\n",
        "        loaded = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])\n"
        '        metadata.parse(loaded.get_modelmeta().custom_metadata_map)  # inside the load\n'
        '        return loaded\n',
        ('tests/test_deploy_errors.py::test_a_bug_after_loading_keeps_its_traceback',),
    ),
    Mutation(
        'openvino_op_reads_int32_shapes_as_int64',
        'pit_det_deploy/csrc/msda_openvino.cpp',
        'if (t.get_element_type() == ov::element::i64) {',
        'if (true) {',
        ('tests/test_fused_op.py::test_both_runtimes_compute_what_the_pytorch_extension_computes',),
    ),
    Mutation(
        'fused_kernel_off_by_half_a_pixel',
        'pit_det_deploy/csrc/ms_deform_attn_forward.h',
        'const scalar_t x = loc_x * W - scalar_t(0.5);',
        'const scalar_t x = loc_x * W;',
        ('tests/test_msda.py::test_fast_equals_stock_forward_and_gradients',),
    ),
    Mutation(
        'standard_graphs_build_the_fused_library',
        'pit_det_deploy/runtime.py',
        '        return load(None)\n    except errors as e:',
        '        return load(library())\n    except errors as e:',
        ('tests/test_fused_op.py::test_without_a_compiler_a_fused_graph_names_the_portable_graphs',),
    ),
    Mutation(
        'int8_accuracy_population_sd',
        'tools/analysis/int8_accuracy.py',
        'statistics.stdev(values)',
        'statistics.pstdev(values)',
        ('tests/test_int8_accuracy.py',),
    ),
    Mutation(
        'trt_plugin_inputs_out_of_order',
        'pit_det_deploy/trt_plugin.py',
        "f'{name}/level_start_index_i32', locations, weights]",
        "f'{name}/level_start_index_i32', weights, locations]",
        ('tests/test_trt_plugin.py::test_the_graph_with_the_documented_plugin_gives_pytorchs_detections',),
    ),
    Mutation(
        'trt_plugin_int64_spatial_shapes',
        'pit_det_deploy/trt_plugin.py',
        "[f'{name}/spatial_shapes_i32'], to=TensorProto.INT32",
        "[f'{name}/spatial_shapes_i32'], to=TensorProto.INT64",
        ('tests/test_trt_plugin.py',),
    ),
    Mutation(
        'trt_plugin_heads_not_flattened',
        'pit_det_deploy/trt_plugin.py',
        'np.array([0, 0, -1], np.int64)',
        'np.array([0, -1, 0], np.int64)',
        ('tests/test_trt_plugin.py',),
    ),
    Mutation(
        'trt_graph_error_unnamed_in_the_runtimes',
        'pit_det_deploy/runtime.py',
        '        if trt_plugin.PLUGIN in str(e):\n',
        '        if False:\n',
        ('tests/test_trt_plugin.py::test_the_cpu_runtimes_name_the_graphs_they_can_run',),
    ),
    Mutation(
        'op_times_count_the_warm_up',
        'pit_det_deploy/runtime.py',
        "e['name'].endswith('_kernel_time') and e['ts'] >= start:",
        "e['name'].endswith('_kernel_time'):",
        ('tests/test_op_times.py',),
    ),
    Mutation(
        'op_times_leave_the_profile_file',
        'pit_det_deploy/runtime.py',
        '            shutil.rmtree(folder, ignore_errors=True)\n',
        '            pass\n',
        ('tests/test_op_times.py',),
    ),
    Mutation(
        'op_times_count_nodes_openvino_did_not_run',
        'pit_det_deploy/runtime.py',
        'if node.status == node.Status.EXECUTED:',
        'if True:',
        ('tests/test_op_times.py',),
    ),
    Mutation(
        'op_times_name_the_fused_op_reference',
        'pit_det_deploy/runtime.py',
        "                    if kind == 'Reference':\n",
        '                    if False:\n',
        ('tests/test_op_times.py',),
    ),
    Mutation(
        'int8_accuracy_quantizes_with_the_default_groups',
        'tools/analysis/int8_accuracy.py',
        "str(args.calib), '--keep-fp32', *keep],",
        'str(args.calib)],',
        ('tests/test_int8_accuracy.py',),
    ),
    Mutation(
        'int8_accuracy_reuses_scores_of_another_model',
        'tools/analysis/int8_accuracy.py',
        'if Path(str(model)).parts[-2:] != fp32.parts[-2:]:',
        'if False:',
        ('tests/test_int8_accuracy.py',),
    ),
    Mutation(
        'int8_accuracy_reuses_an_export_older_than_the_training',
        'tools/analysis/int8_accuracy.py',
        'if not source.is_file() or made.stat().st_mtime < source.stat().st_mtime:',
        'if not source.is_file():',
        ('tests/test_int8_accuracy.py',),
    ),
    Mutation(
        'keep_fp32_groups_in_the_order_given',
        'pit_det_deploy/quantize.py',
        'return tuple(group for group in KEEP_FP32 if group in names)',
        'return tuple(dict.fromkeys(names))',
        (
            'tests/test_quantize.py::test_keep_fp32_names_one_group_set_in_one_order',
            'tests/test_benchmark.py::test_int8_rows_by_their_fp32_groups',
        ),
    ),
    Mutation(
        'fp32_nodes_take_the_names_as_given',
        'pit_det_deploy/quantize.py',
        '    keep = keep_groups(keep)\n    matmuls',
        '    matmuls',
        ('tests/test_quantize.py::test_fp32_groups_are_found_by_what_the_matmuls_compute',),
    ),
    Mutation(
        'benchmark_int8_rows_ignore_their_fp32_groups',
        'pit_det/benchmark/runner.py',
        "quantize(fp32, path, ({'image': n} for n in noise), keep=keep)",
        "quantize(fp32, path, ({'image': n} for n in noise))",
        ('tests/test_benchmark.py::test_benchmark_compile_and_runtime_rows',),
    ),
    Mutation(
        'rng_state_of_a_gpu_checkpoint_read_as_it_is',
        'pit_det/hooks.py',
        'keys.cpu().numpy()',
        'keys.numpy()',
        ('tests/test_hooks.py::test_rng_states_restored_from_a_checkpoint_loaded_onto_a_gpu',),
    ),
    Mutation(
        'rng_state_cpu_tensor_left_on_the_gpu',
        'pit_det/hooks.py',
        "torch.set_rng_state(state['torch'].cpu())",
        "torch.set_rng_state(state['torch'])",
        ('tests/test_hooks.py::test_rng_states_restored_from_a_checkpoint_loaded_onto_a_gpu',),
    ),
    Mutation(
        'cuda_rng_state_not_restored',
        'pit_det/hooks.py',
        "        torch.cuda.set_rng_state(state['cuda'].cpu())\n",
        '        pass\n',
        ('tests/test_hooks.py::test_rng_states_restored_from_a_checkpoint_loaded_onto_a_gpu',),
    ),
    Mutation(
        'non_finite_loss_judged_by_each_rank_alone',
        'pit_det/hooks.py',
        '        all_reduce(flags)  # sum',
        '        pass  # sum',
        ('tests/test_hooks.py',),
    ),
    Mutation(
        'non_finite_loss_raised_before_rank_0_saved',
        'pit_det/hooks.py',
        '            barrier()  # rank 0',
        '            pass  # rank 0',
        ('tests/test_hooks.py',),
    ),
    Mutation(
        'sample_seed_reseeds_the_gpus',
        'pit_det/datasets/sampler.py',
        'torch.default_generator.manual_seed(seed)',
        'torch.manual_seed(seed)',
        ('tests/test_sampler.py::test_gpu_streams_are_not_reseeded_per_sample',),
    ),
    Mutation(
        'bf16_logits_to_mmcvs_cuda_focal_loss',
        'pit_det/models/losses.py',
        '                pred = pred.float()  #',
        '                pass  #',
        ('tests/test_cuda_branch.py::test_bf16_logits_reach_mmcvs_cuda_focal_loss_in_fp32',),
    ),
    Mutation(
        'mmcv_cuda_msda_on_the_current_device',
        'pit_det/ops/ms_deform_attn_op.py',
        '    with torch.cuda.device(value.device):\n        return',
        '    if True:\n        return',
        ('tests/test_cuda_branch.py::test_kernels_launch_on_their_tensors_device',),
    ),
    Mutation(
        'triton_msda_on_the_current_device',
        'pit_det/ops/ms_deform_attn_triton.py',
        "    with torch.cuda.device(value.device) if value.device.type == 'cuda' else nullcontext():",
        '    with nullcontext():',
        ('tests/test_cuda_branch.py::test_kernels_launch_on_their_tensors_device',),
    ),
    Mutation(
        'triton_msda_accumulates_low_precision_values_in_their_dtype',
        'pit_det/ops/ms_deform_attn_triton.py',
        'acc = tl.float64 if value.dtype == torch.float64 else tl.float32',
        'acc = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}.get(value.dtype, tl.float32)',
        ('tests/test_msda_triton.py::test_low_precision_values_are_read_natively_and_accumulated_in_fp32',),
    ),
    Mutation(
        'triton_msda_sums_the_value_gradient_in_its_dtype',
        'pit_det/ops/ms_deform_attn_triton.py',
        'grad_value = torch.zeros_like(value, dtype=torch.promote_types(value.dtype, torch.float32))',
        'grad_value = torch.zeros_like(value)',
        ('tests/test_msda_triton.py::test_low_precision_values_are_read_natively_and_accumulated_in_fp32',),
    ),
    Mutation(
        'benchmark_header_drops_the_cpu_family',
        'pit_det/benchmark/measure.py',
        "cpu = describe_cpu(env['cpu'], env['cpu_isa'], native, env['cpu_cores'], env['cpu_family'])",
        "cpu = describe_cpu(env['cpu'], env['cpu_isa'], native, env['cpu_cores'])",
        ('tests/test_benchmark.py::test_a_gpu_header_names_the_gpu_its_host_and_whether_mmcv_has_cuda_ops',),
    ),
    Mutation(
        'benchmark_waits_for_the_current_device',
        'pit_det/benchmark/measure.py',
        'torch.cuda.synchronize(device)  #',
        'torch.cuda.synchronize()  #',
        ('tests/test_cuda_branch.py::test_timing_waits_for_and_measures_the_device_asked',),
    ),
    Mutation(
        'benchmark_fp32_convolutions_in_tf32',
        'pit_det/benchmark/measure.py',
        '        torch.backends.cudnn.allow_tf32 = False\n',
        '        pass\n',
        ('tests/test_cuda_branch.py::test_timing_waits_for_and_measures_the_device_asked',),
    ),
    Mutation(
        'emulated_gpu_bf16_taken_as_native',
        'pit_det_deploy/hardware.py',
        'return torch.cuda.is_bf16_supported(including_emulation=False)',
        'return torch.cuda.is_bf16_supported()',
        ('tests/test_precision.py::test_gpu_without_bf16_is_refused',),
    ),
    Mutation(
        'gpu_check_passes_nan_bf16_rows',
        'tools/setup/gpu_check.py',
        'if not all(math.isfinite(d) for d in diffs):',
        'if False:',
        ('tests/test_gpu_check.py::test_benchmark_step_judges_every_row',),
    ),
    Mutation(
        'gpu_check_passes_rows_without_cuda_graphs',
        'tools/setup/gpu_check.py',
        "if not row['graph_launches']:  # None (not profiled) or 0",
        'if False:',
        ('tests/test_gpu_check.py::test_cuda_graphs_rows_must_replay_a_graph',),
    ),
    Mutation(
        'gpu_check_site_keeps_old_packages',
        'tools/setup/gpu_check.sh',
        '--no-compile --upgrade --target',
        '--no-compile --target',
        ('tests/test_gpu_check.py::test_install_and_build_on_the_gpu_machine',),
    ),
    Mutation(
        'gpu_check_installs_whatever_wheels_are_there',
        'tools/setup/gpu_check.sh',
        '"${INSTALL[@]}" --find-links "$WHEELS" "${PACKAGES[@]}"',
        '"${INSTALL[@]}" --find-links "$WHEELS" "$WHEELS"/[!m]*.whl',
        ('tests/test_gpu_check.py::test_install_and_build_on_the_gpu_machine',),
    ),
    Mutation(
        'gpu_check_trusts_a_wheel_that_did_not_install',
        'tools/setup/gpu_check.sh',
        'if "${INSTALL[@]}" "${BUILT[0]}" && "$PY"',
        'if "${INSTALL[@]}" "${BUILT[0]}"; "$PY"',
        ('tests/test_gpu_check.py::test_install_and_build_on_the_gpu_machine',),
    ),
    Mutation(
        'gpu_check_passes_bf16_rows_that_ran_in_fp32',
        'tools/setup/gpu_check.py',
        "elif diffs[0] <= FP32_SCORE_TOL and 'fp32' in row['reference']:",
        'elif False:',
        ('tests/test_gpu_check.py::test_benchmark_step_judges_every_row',),
    ),
    Mutation(
        'gpu_check_one_crash_ends_the_benchmark_step',
        'tools/setup/gpu_check.py',
        '        except Exception as err:\n            message = ',
        '        except ZeroDivisionError as err:\n            message = ',
        ('tests/test_gpu_check.py::test_a_crashed_benchmark_run_fails_its_entry_and_the_next_still_runs',),
    ),
    Mutation(
        'gpu_tier_takes_any_precision',
        'tests/gpu/gpu_tier.py',
        "if 'loss_scaler' not in ckpt.get('optimizer', {}):",
        'if True:',
        ('tests/test_gpu_check.py::test_the_tier_reads_the_training_precision_from_the_checkpoint',),
    ),
    Mutation(
        'gpu_process_builds_the_cpu_kernel',
        'pit_det/models/msda.py',
        '            kernels[kind] = resolve(impl, kind)\n            break\n',
        '            kernels[kind] = resolve(impl, kind)\n',
        ('tests/test_cuda_branch.py::test_a_gpu_process_builds_no_cpu_kernel_until_a_cpu_forward',),
    ),
    Mutation(
        'setup_stamp_ignores_the_mmcv_variant',
        'tools/setup/setup_env.sh',
        ' && "$STAMP_TAG" == "$NOW_TAG" ]]',
        ' ]]',
        ('tests/test_setup.py::test_a_new_mmcv_variant_is_built_where_the_set_up_was_complete',),
    ),
    Mutation(
        'an_output_may_be_an_input',
        'pit_det_deploy/outputs.py',
        'if source is not None and Path(source).exists() and out.resolve() == Path(source).resolve():',
        'if False:',
        ('tests/test_tool_inputs.py',),
    ),
    Mutation(
        'pictures_replace_their_images',
        'pit_det_deploy/outputs.py',
        'if inside is not None:',
        'if False:',
        (
            'tests/test_tool_inputs.py::test_pictures_never_replace_the_images',
            'tests/test_tool_inputs.py::test_demos_refuse_to_draw_over_their_images',
        ),
    ),
    Mutation(
        'two_images_drawn_to_one_picture',
        'pit_det_deploy/outputs.py',
        'if path in drawn:',
        'if False:',
        ('tests/test_tool_inputs.py::test_pictures_never_replace_the_images',),
    ),
    Mutation(
        'test_tool_evaluates_another_detectors_checkpoint',
        'tools/test.py',
        '    require_fit(model.state_dict(), weights, args.checkpoint, args.config)\n',
        '',
        ('tests/test_tool_inputs.py::test_a_checkpoint_of_another_detector_is_refused_by_test_and_demo',),
    ),
    Mutation(
        'config_classes_in_another_order',
        'pit_det/datasets/coco.py',
        '        if found == classes:\n            return\n',
        '        if not [c for c in classes if c not in self._json_classes]:\n            return\n',
        ('tests/test_annotation_files.py::test_config_classes_must_be_json_categories_in_their_order',),
    ),
    Mutation(
        'resume_from_weights_only',
        'tools/train.py',
        '        meta = resumable_meta(resume_from)',
        '        meta = {}',
        ('tests/test_tool_inputs.py::test_resume_is_checked_before_the_runner_starts',),
    ),
    Mutation(
        'model_metadata_fields_unchecked',
        'pit_det_deploy/metadata.py',
        '    missing = [field for field in needed if field not in info]',
        '    missing = []',
        ('tests/test_tool_inputs.py::test_a_model_with_broken_pit_det_metadata_is_named',),
    ),
    Mutation(
        'onnx_eval_annotations_unchecked',
        'pit_det_deploy/evaluate.py',
        'with malformed_annotations(ann_file), contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints',
        'with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints',
        (
            'tests/test_tool_inputs.py::test_onnx_eval_refuses_to_write_over_its_inputs_and_names_a_broken_annotation_file',
        ),
    ),
    Mutation(
        'benchmark_arguments_unchecked',
        'tools/analysis/benchmark.py',
        '    check_arguments(parser, args)\n',
        '',
        ('tests/test_tool_inputs.py::test_benchmark_arguments_are_checked_before_any_timing',),
    ),
    Mutation(
        'onnx_eval_scores_no_images',
        'pit_det_deploy/evaluate.py',
        'if not images:',
        'if False:',
        (
            'tests/test_tool_inputs.py::test_onnx_eval_refuses_to_write_over_its_inputs_and_names_a_broken_annotation_file',
        ),
    ),
    Mutation(
        'checker_passes_no_images',
        'pit_det/datasets/check.py',
        "    if not coco['images']:\n",
        '    if False:\n',
        ('tests/test_tool_inputs.py::test_an_empty_image_list_is_an_error_of_the_checker',),
    ),
    Mutation(
        'train_zero_epochs',
        'tools/train.py',
        'if epochs is not None and epochs < 1:',
        'if False:',
        ('tests/test_tool_inputs.py::test_training_zero_epochs_is_refused',),
    ),
    Mutation(
        'weights_under_model_left_random_by_mmengine',
        'pit_det/checkpoint/reading.py',
        "if weights is not checkpoint and 'state_dict' not in checkpoint and weights and _is_state_dict(weights):",
        'if False:',
        ('tests/test_checkpoint_reading.py::test_weights_under_model_reach_mmengine_and_training_arguments_are_data',),
    ),
    Mutation(
        'training_arguments_refused',
        'pit_det/checkpoint/reading.py',
        '    argparse.Namespace,  # the training arguments',
        '    # the training arguments',
        ('tests/test_checkpoint_reading.py::test_weights_under_model_reach_mmengine_and_training_arguments_are_data',),
    ),
    Mutation(
        'detector_names_classes_as_coco_without_meta',
        'pit_det/models/build.py',
        "classes = (test_set.get('metainfo') or {}).get('classes')",
        'classes = None',
        ('tests/test_tool_inputs.py::test_a_strip_is_drawn_and_a_pipeline_that_cannot_take_it_is_named',),
    ),
    Mutation(
        'training_on_a_file_without_boxes',
        'pit_det/datasets/coco.py',
        'if not self._num_boxes and not self.test_mode and not self.negatives_only:',
        'if False:',
        ('tests/test_annotation_files.py::test_a_file_without_annotations_is_run_on_but_not_trained_on',),
    ),
    Mutation(
        'test_dev_file_refused',
        'pit_det/datasets/check.py',
        "if field == 'annotations':  # a test-dev file",
        'if False:  # a test-dev file',
        ('tests/test_annotation_files.py::test_a_file_without_annotations_is_run_on_but_not_trained_on',),
    ),
    Mutation(
        'load_detector_outside_mmdets_scope',
        'pit_det/models/build.py',
        "    init_default_scope(cfg.get('default_scope', 'mmdet'))",
        '    pass',
        ('tests/test_toy_e2e.py::test_demo_draws_one_picture_per_input', 'tests/test_sampling.py'),
    ),
    Mutation(
        'test_scores_nothing_after_a_pass_over_the_images',
        'tools/test.py',
        '    require_boxes_to_score(runner.test_loop.evaluator, cfg.test_evaluator)\n',
        '',
        ('tests/test_tool_inputs.py::test_scoring_a_file_with_nothing_to_score_is_refused_before_inference',),
    ),
    Mutation(
        'train_validates_a_file_with_nothing_to_score',
        'tools/train.py',
        "        require_boxes_to_score(runner.val_loop.evaluator, cfg.val_evaluator, 'val_evaluator')\n",
        '        pass\n',
        (
            'tests/test_tool_inputs.py::test_training_with_nothing_to_score_in_validation_stops_before_the_first_iteration',
        ),
    ),
    Mutation(
        'val_check_names_the_test_loops_fix',
        'pit_det/datasets/check.py',
        "                if name == 'val_evaluator'\n",
        "                if name == 'val'\n",
        (
            'tests/test_tool_inputs.py::test_training_with_nothing_to_score_in_validation_stops_before_the_first_iteration',
        ),
    ),
    Mutation(
        'demo_draws_the_gpus_tensors',
        'tools/demo.py',
        '        pred = result.pred_instances.cpu()\n',
        '        pred = result.pred_instances\n',
        ('tests/test_cuda_branch.py::test_the_demo_on_a_gpu_draws_host_copies_and_reaches_no_mmcv_cuda_op',),
    ),
    Mutation(
        'checkpoint_of_no_pickle_called_unsafe',
        'pit_det/checkpoint/reading.py',
        "        if opcode == '':",
        '        if False:',
        ('tests/test_checkpoint_reading.py::test_bytes_that_are_no_pickle_are_named_unreadable_not_unsafe',),
    ),
    Mutation(
        'pickle_of_an_opcode_torch_lacks_called_unreadable',
        'pit_det/checkpoint/reading.py',
        '    op = pickletools.code2op.get(chr(code)) if code < 256 else None',
        '    op = None',
        ('tests/test_checkpoint_reading.py::test_a_pickle_from_pythons_own_pickle_is_refused_and_never_runs',),
    ),
    Mutation(
        'test_reads_the_checkpoint_after_building_the_runner',
        'tools/test.py',
        '    weights = read_state_dict(args.checkpoint)  #',
        '    weights = None  #',
        ('tests/test_tool_inputs.py::test_a_checkpoint_that_cannot_be_read_is_named_before_the_runner_is_built',),
    ),
    Mutation(
        'cpu_described_without_its_family_and_model',
        'pit_det_deploy/hardware.py',
        "                elif key in ('cpu family', 'model'):",
        "                elif key in ('cpu family',):",
        ('tests/test_precision.py::test_cpuinfo_flags_are_read_where_torch_has_no_query',),
    ),
    Mutation(
        'test_writes_ap_minus_one_and_exits_0',
        'tools/test.py',
        'if ap and all(v == -1 for v in ap):',
        'if False:',
        ('tests/test_tool_inputs.py::test_scoring_a_file_with_nothing_to_score_is_refused_before_inference',),
    ),
    Mutation(
        'onnx_eval_averages_in_categories_the_model_lacks',
        'pit_det_deploy/evaluate.py',
        '        evaluator.params.catIds = coco.getCatIds(catNms=list(detector.classes))\n',
        '',
        ('tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',),
    ),
    Mutation(
        'boxes_off_the_images_counted',
        'pit_det_deploy/evaluate.py',
        "and ann['image_id'] in coco.imgs",
        '',
        ('tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',),
    ),
    Mutation(
        'areas_outside_cocoevals_range_counted',
        'pit_det_deploy/evaluate.py',
        "and not (ann['area'] < 0 or ann['area'] > 1e10)",
        '',
        ('tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',),
    ),
    Mutation(
        'area_range_upper_bound_moved',
        'pit_det_deploy/evaluate.py',
        "ann['area'] > 1e10)",
        "ann['area'] > 2e10)",
        ('tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',),
    ),
    Mutation(
        'area_zero_not_counted',
        'pit_det_deploy/evaluate.py',
        "(ann['area'] < 0 or",
        "(ann['area'] <= 0 or",
        ('tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',),
    ),
    Mutation(
        'unreadable_annotations_as_traceback_before_inference',
        'pit_det/datasets/check.py',
        'except (KeyError, TypeError) as err:  # COCOeval would stop there too',
        'except ZeroDivisionError as err:  # COCOeval would stop there too',
        ('tests/test_tool_inputs.py::test_the_metrics_to_score_are_read_as_mmengine_builds_them',),
    ),
    Mutation(
        'evaluator_metrics_key_ignored',
        'pit_det/config.py',
        "if isinstance(evaluator_cfg, dict) and 'metrics' in evaluator_cfg:",
        'if False:',
        ('tests/test_tool_inputs.py::test_the_metrics_to_score_are_read_as_mmengine_builds_them',),
    ),
    Mutation(
        'test_dev_submission_refused_too',
        'pit_det/datasets/check.py',
        'or metric.format_only or coco is None',
        'or coco is None',
        ('tests/test_tool_inputs.py::test_scoring_a_file_with_nothing_to_score_is_refused_before_inference',),
    ),
    Mutation(
        'crowds_counted_as_boxes_to_score',
        'pit_det_deploy/evaluate.py',
        "and not ann['iscrowd']",
        '',
        (
            'tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',
            'tests/test_tool_inputs.py::test_scoring_a_file_with_nothing_to_score_is_refused_before_inference',
        ),
    ),
    Mutation(
        'boxes_of_other_classes_counted',
        'pit_det_deploy/evaluate.py',
        "ann['category_id'] in ids",
        'True',
        ('tests/test_tool_inputs.py::test_onnx_eval_refuses_a_file_with_nothing_to_score_before_inference',),
    ),
    Mutation(
        'cfg_option_into_none_as_traceback',
        'pit_det/config.py',
        'except TypeError as err:  # mmengine cannot merge',
        'except ZeroDivisionError as err:  # mmengine cannot merge',
        ('tests/test_tool_inputs.py::test_an_option_inside_a_key_the_config_sets_to_none_names_the_fix',),
    ),
    Mutation(
        'demo_stops_at_an_unreadable_image',
        'tools/demo.py',
        '            unreadable.append(path)\n            continue\n',
        "            raise PitDetError(f'cannot read image {path}')\n",
        ('tests/test_tool_inputs.py::test_the_demo_draws_every_readable_image_and_names_the_others',),
    ),
    Mutation(
        'export_keeps_a_graph_at_another_opset_than_asked',
        'pit_det/export/to_onnx.py',
        '    if written != opset:',
        '    if False:',
        ('tests/test_export_tools.py::test_bad_inputs_are_named',),
    ),
    Mutation(
        'test_tool_writes_every_coco_metrics_detections_to_one_file',
        'tools/test.py',
        "'detections' if i == 1 else f'detections_{i}'",
        "'detections'",
        ('tests/test_tool_inputs.py::test_an_evaluator_of_several_metrics_writes_each_coco_metrics_detections',),
    ),
    Mutation(
        'test_tool_finds_no_coco_metric',
        'tools/test.py',
        '    return isinstance(cls, type) and issubclass(cls, CocoMetric)',
        '    return False',
        ('tests/test_tool_inputs.py::test_an_evaluator_of_several_metrics_writes_each_coco_metrics_detections',),
    ),
    Mutation(
        'onnx_demo_stops_at_an_unreadable_image',
        'tools/deploy/onnx_demo.py',
        '            unreadable.append(path)\n            continue\n',
        "            raise DeployError(f'cannot read image {path}')\n",
        ('tests/test_export_tools.py::test_bad_inputs_are_named',),
    ),
    Mutation(
        'r50_backbone_left_random_by_a_foreign_file',
        'pit_det/models/deformable_detr.py',
        '            require_pretrained_loaded(backbone)\n',
        '            pass\n',
        ('tests/test_shipped_configs.py::test_r50_refuses_a_file_whose_weights_it_would_not_load',),
    ),
    Mutation(
        'checker_ignores_exif_rotation',
        'pit_det/datasets/check.py',
        'if orientation in (5, 6, 7, 8):',
        'if False:',
        ('tests/test_reliability.py::test_checker_takes_an_exif_rotated_image_at_the_size_it_loads',),
    ),
    Mutation(
        'pretrained_check_compares_across_devices',
        'pit_det/checkpoint/pretrained.py',
        'torch.equal(state[k].to(v.dtype), v.cpu())',
        'torch.equal(state[k].to(v.dtype), v)',
        ('tests/test_cuda_branch.py::test_the_pretrained_check_reads_a_backbone_already_on_the_gpu',),
    ),
    Mutation(
        'string_image_ids_refused',
        'pit_det/datasets/check.py',
        'IMAGE_ID = (int, str)',
        'IMAGE_ID = int',
        ('tests/test_tool_inputs.py::test_string_image_ids_evaluate_as_their_numbers_do',),
    ),
    Mutation(
        'annotation_without_area_accepted',
        'pit_det/datasets/check.py',
        "if 'area' not in ann:",
        'if False:',
        ('tests/test_annotation_files.py::test_malformed_entries_are_named_by_checker_and_dataset[no_area]',),
    ),
    Mutation(
        'annotation_id_0_accepted',
        'pit_det/datasets/check.py',
        "if isinstance(ann, dict) and ann.get('id') == 0 and",
        'if False and',
        ('tests/test_annotation_files.py::test_what_only_coco_evaluation_trips_over_is_refused_for_evaluation_only',),
    ),
    Mutation(
        'json_with_a_byte_order_mark_accepted',
        'pit_det/datasets/check.py',
        'if f.read(len(codecs.BOM_UTF8)) == codecs.BOM_UTF8:',
        'if False:',
        ('tests/test_annotation_files.py::test_what_only_coco_evaluation_trips_over_is_refused_for_evaluation_only',),
    ),
    Mutation(
        'training_refuses_what_only_evaluation_trips_over',
        'pit_det/datasets/coco.py',
        'ValidatedCOCO(annotation_file, for_evaluation=self.test_mode)',
        'ValidatedCOCO(annotation_file, for_evaluation=True)',
        ('tests/test_annotation_files.py::test_what_only_coco_evaluation_trips_over_is_refused_for_evaluation_only',),
    ),
    Mutation(
        'zero_area_reported_as_degenerate',
        'pit_det/datasets/coco.py',
        "elif w > 0 and h > 0 and ann['area'] <= 0:",
        'elif False:',
        ('tests/test_annotation_files.py::test_boxes_with_zero_area_are_named_as_such',),
    ),
    Mutation(
        'export_hands_an_unknown_opset_to_the_exporter',
        'pit_det/export/to_onnx.py',
        'if opset > max_opset():',
        'if False:',
        ('tests/test_tool_inputs.py::test_an_opset_newer_than_the_exporter_writes_is_refused_in_one_line',),
    ),
    Mutation(
        'demo_pipeline_error_as_traceback',
        'pit_det/inference.py',
        'except cv2.error as err:',
        'except ZeroDivisionError as err:',
        ('tests/test_tool_inputs.py::test_a_strip_is_drawn_and_a_pipeline_that_cannot_take_it_is_named',),
    ),
    Mutation(
        'weights_under_model_not_looked_for',
        'pit_det/checkpoint/reading.py',
        "WEIGHT_KEYS = ('state_dict', 'model', 'module')",
        "WEIGHT_KEYS = ('state_dict', 'module')",
        ('tests/test_checkpoint_reading.py::test_weights_under_model_reach_mmengine_and_training_arguments_are_data',),
    ),
    Mutation(
        'detector_ignores_the_checkpoints_class_names',
        'pit_det/models/build.py',
        "meta = {k.lower(): v for k, v in (checkpoint_meta.get('dataset_meta') or {}).items()}",
        'meta = {}',
        (
            'tests/test_checkpoint_reading.py::'
            'test_a_detector_names_the_classes_of_its_checkpoint_else_of_its_config_else_cocos',
        ),
    ),
    Mutation(
        'export_finds_the_resize_by_name',
        'pit_det/export/detector.py',
        "return isinstance(cls, type) and issubclass(cls, Resize) and 'scale' in transform",
        "return transform['type'] in ('Resize', 'SafeResize')",
        (
            'tests/test_export.py::'
            'test_the_exported_preprocessing_is_the_test_pipelines_keep_ratio_resize_found_by_class',
        ),
    ),
    Mutation(
        'mixed_image_ids_evaluated',
        'pit_det/datasets/check.py',
        '    if numbers and strings:',
        '    if False:',
        (
            'tests/test_annotation_files.py::'
            'test_what_only_coco_evaluation_trips_over_is_refused_for_evaluation_only[mixed_image_ids]',
        ),
    ),
    Mutation(
        'onnx_eval_sorts_mixed_image_ids',
        'pit_det_deploy/evaluate.py',
        'except TypeError:  # COCOeval sorts the ids too',
        'except ZeroDivisionError:  # COCOeval sorts the ids too',
        (
            'tests/test_tool_inputs.py::test_onnx_eval_refuses_to_write_over_its_inputs_and_names_a_broken_annotation_file',
        ),
    ),
    Mutation(
        'onnx_eval_reads_a_string_id_as_one_letter_ids',
        'pit_det_deploy/evaluate.py',
        "file_names = {image_id: coco.imgs[image_id]['file_name'] for image_id in coco.getImgIds()}",
        "file_names = {image_id: coco.loadImgs(image_id)[0]['file_name'] for image_id in coco.getImgIds()}",
        ('tests/test_tool_inputs.py::test_onnx_eval_scores_a_set_with_string_image_ids_as_with_numbers',),
    ),
    Mutation(
        'export_resize_by_a_factor_taken_for_a_scale',
        'pit_det/export/detector.py',
        "issubclass(cls, Resize) and 'scale' in transform",
        'issubclass(cls, Resize)',
        (
            'tests/test_export.py::'
            'test_the_exported_preprocessing_is_the_test_pipelines_keep_ratio_resize_found_by_class',
        ),
    ),
    Mutation(
        'checker_warning_left_undescribed',
        'pit_det/datasets/check.py',
        "    'mixed_image_ids': 'image ids mixing numbers and strings (evaluation refuses it: COCOeval sorts them)',\n",
        '',
        (
            'tests/test_annotation_files.py::'
            'test_what_only_coco_evaluation_trips_over_is_refused_for_evaluation_only[mixed_image_ids]',
        ),
    ),
    Mutation(
        'dist_test_runs_each_process_alone',
        'tools/launch/torchrun.sh',
        '"$TOOLS/$TOOL" --launcher pytorch "$@"',
        '"$TOOLS/$TOOL" "$@"',
        ('tests/test_toy_e2e.py::test_torchrun_two_processes_on_cpu',),
    ),
    Mutation(
        'slurm_jobs_share_one_port',
        'tools/launch/srun.sh',
        'MASTER_PORT=${PORT:-29500} srun',
        'srun',
        ('tests/test_launch_scripts.py',),
    ),
    Mutation(
        'slurm_reserves_a_whole_node',
        'tools/launch/srun.sh',
        'GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}',
        'GPUS_PER_NODE=${GPUS_PER_NODE:-8}',
        ('tests/test_launch_scripts.py',),
    ),
    Mutation(
        'auto_scale_lr_without_a_base_batch',
        'tools/train.py',
        "if not (cfg.get('auto_scale_lr') or {}).get('base_batch_size'):",
        'if False:',
        ('tests/test_tool_inputs.py::test_auto_scale_lr_on_a_config_without_its_base_batch_names_the_entry',),
    ),
    Mutation(
        'moved_work_dir_refused',
        'pit_det/checkpoint/resume.py',
        '            named = moved  # the work dir moved since the pointer was written',
        '            pass',
        (
            'tests/test_checkpoint_reading.py::'
            'test_a_work_dir_moved_elsewhere_resumes_from_its_own_copy_of_the_named_checkpoint',
        ),
    ),
]


def caught(mutation: Mutation) -> bool:
    """True when the mutated code makes at least one of its tests fail."""
    path = ROOT / mutation.path
    source = path.read_text()
    if source.count(mutation.old) != 1:
        raise SystemExit(
            f'{mutation.name}: {mutation.path} has {source.count(mutation.old)} copies of {mutation.old!r}'
        )
    mutated = source.replace(mutation.old, mutation.new)
    if path.suffix == '.py':
        try:  # a mutation that breaks the syntax would be 'caught' by any test importing the file
            compile(mutated, str(path), 'exec')
        except SyntaxError as err:
            raise SystemExit(f'{mutation.name}: the mutated {mutation.path} is no valid Python ({err})') from None
    try:
        path.write_text(mutated)
        cmd = [sys.executable, '-m', 'pytest', '-q', '-x', '-p', 'no:cacheprovider', *mutation.tests]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True).returncode != 0
    finally:
        path.write_text(source)


def main(argv=None) -> int:
    pattern = (argv if argv is not None else sys.argv[1:]) or ['']
    chosen = [m for m in MUTATIONS if any(p in m.name for p in pattern)]
    survived = []
    for mutation in chosen:
        ok = caught(mutation)
        print(f'{"caught  " if ok else "SURVIVED"} {mutation.name}', flush=True)
        if not ok:
            survived.append(mutation.name)
    print(f'{len(chosen) - len(survived)} of {len(chosen)} mutations caught')
    return 1 if survived else 0


if __name__ == '__main__':
    sys.exit(main())
