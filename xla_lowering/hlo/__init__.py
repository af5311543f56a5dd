"""The project's HLO IR.

Attribute conventions (``Instruction.attrs``), shared by the proto importer, the text parser, the reference
evaluator, the passes and the lowering:

- parameter: ``number`` (int)
- constant: ``value`` (NumPy array of the instruction's shape and dtype; pred as bool; a tuple-shaped
  constant holds a tuple of such arrays)
- iota: ``iota_dimension`` (int)
- broadcast / reduce / transpose / reverse / map: ``dimensions`` (tuple of int); also set-dimension-size,
  get-dimension-size, all-gather, reduce-scatter
- slice: ``starts``, ``limits``, ``strides`` (tuples; text may omit a stride of 1)
- concatenate: ``dimension`` (int; text ``dimensions={d}``)
- pad: ``padding`` (tuple of (low, high, interior) per dimension)
- dot: ``lhs_batch_dims``, ``rhs_batch_dims``, ``lhs_contracting_dims``, ``rhs_contracting_dims`` (always all
  four, () when empty)
- compare: ``direction`` ('EQ', 'NE', 'LT', 'LE', 'GT', 'GE'), optional ``compare_type`` (XLA's name, e.g.
  'TOTALORDER'; present only when it differs from the operand type's default FLOAT/SIGNED/UNSIGNED)
- get-tuple-element: ``index``
- dynamic-slice: ``slice_sizes`` (text ``dynamic_slice_sizes``)
- gather: ``offset_dims``, ``collapsed_slice_dims``, ``start_index_map``, ``index_vector_dim``,
  ``slice_sizes``, ``operand_batching_dims``, ``start_indices_batching_dims``, ``indices_are_sorted``
- scatter: ``update_window_dims``, ``inserted_window_dims``, ``scatter_dims_to_operand_dims``,
  ``index_vector_dim``, ``input_batching_dims``, ``scatter_indices_batching_dims``, ``indices_are_sorted``,
  ``unique_indices``; called ``to_apply``
- gather / scatter: every key above is always present (batching dims () and flags False by default)
- rng: ``distribution`` ('uniform' or 'normal'); rng-bit-generator: ``algorithm`` ('default', 'three_fry' or
  'philox')
- reduce / map / reduce-window / scatter / sort / all-reduce: called ``to_apply``
- reduce-window / select-and-scatter / convolution: ``window``: tuple of dicts per spatial dim with keys
  size, stride, pad_low, pad_high, window_dilation, base_dilation (ints), reversal (bool); text ``lhs_dilate``
  is base_dilation, ``rhs_dilate`` window_dilation
- select-and-scatter: called ``select`` and ``scatter``
- convolution: ``dnums`` (dict: input_batch_dimension, input_feature_dimension, input_spatial_dimensions,
  kernel_input_feature_dimension, kernel_output_feature_dimension, kernel_spatial_dimensions,
  output_batch_dimension, output_feature_dimension, output_spatial_dimensions; spatial ones are tuples),
  ``feature_group_count``, ``batch_group_count`` (always present, default 1)
- while: called ``condition`` and ``body``; conditional: called ``branch_0`` .. ``branch_N`` (a pred
  conditional's true branch is ``branch_0``, false ``branch_1``; text true_computation/false_computation);
  call: called ``to_apply``. In an HloModuleProto a while's ``called_computation_ids`` are body, condition.
- sort: ``dimensions`` (1-tuple), ``is_stable`` (default False)
- custom-call: ``target``, ``backend_config`` (str, default '')
- batch-norm-*: ``epsilon`` (float, rounded to float32 as XLA stores it), ``feature_index``;
  reduce-precision: ``exponent_bits``, ``mantissa_bits``
- fusion (made by the fusion pass): ``kind`` ('expression'); called ``fused`` whose parameters are the
  fusion's operands in order. 'expression' is XLA's kLoop; other XLA kinds are kept as named ('kInput', ...).
  An 'expression' fusion made by ``passes.fusion`` has operands that are rank-0 or have the fusion's dims, and
  a fused computation of only elementwise ops (``reference.ELEMENTWISE_OPS``, at least two), rank-0 constants
  and broadcasts of rank-0 values; its metadata is the fused root's

``Instruction.metadata`` keeps ``op_type``, ``op_name``, ``source_file`` (str) and ``source_line`` (int), each
only when set. ``Module.aliases`` keeps input_output_alias entries without their kind (may/must-alias).
Shapes are static: a dynamic dimension raises ``text.DynamicShapeNotSupported`` (a NotImplementedError and
an ``errors.DynamicShapeError``). Attributes that do not change what one device computes (layouts, sharding,
frontend_attributes, parameter_replication, operand_precision, dot ``algorithm``, backend_config other than
a custom-call's, channel_id, replica_groups, control-predecessors, ...) are not kept; ``text.module_to_text``
refuses attributes outside these conventions rather than leaving them out of the cache key.
"""
from .ir import Alias, Computation, Instruction, Module, Shape, np_dtype, hlo_dtype  # noqa: F401
