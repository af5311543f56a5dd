"""The project's HLO IR.

Attribute conventions (``Instruction.attrs``), shared by the proto importer, the text parser, the reference
evaluator, the passes and the lowering:

- parameter: ``number`` (int)
- constant: ``value`` (NumPy array of the instruction's shape and dtype; pred as bool)
- iota: ``iota_dimension`` (int)
- broadcast / reduce / transpose / reverse / map: ``dimensions`` (tuple of int)
- slice: ``starts``, ``limits``, ``strides`` (tuples)
- concatenate: ``dimension`` (int)
- pad: ``padding`` (tuple of (low, high, interior) per dimension)
- dot: ``lhs_batch_dims``, ``rhs_batch_dims``, ``lhs_contracting_dims``, ``rhs_contracting_dims``
- compare: ``direction`` ('EQ', 'NE', 'LT', 'LE', 'GT', 'GE'), optional ``compare_type``
- get-tuple-element: ``index``
- dynamic-slice: ``slice_sizes``
- gather: ``offset_dims``, ``collapsed_slice_dims``, ``start_index_map``, ``index_vector_dim``,
  ``slice_sizes``, ``operand_batching_dims``, ``start_indices_batching_dims``, ``indices_are_sorted``
- scatter: ``update_window_dims``, ``inserted_window_dims``, ``scatter_dims_to_operand_dims``,
  ``index_vector_dim``, ``input_batching_dims``, ``scatter_indices_batching_dims``, ``indices_are_sorted``,
  ``unique_indices``; called ``to_apply``
- rng: ``distribution`` ('uniform' or 'normal'); rng-bit-generator: ``algorithm``
- reduce / map / reduce-window / scatter / sort / all-reduce: called ``to_apply``
- reduce-window / select-and-scatter / convolution: ``window``: tuple of dicts per spatial dim with keys
  size, stride, pad_low, pad_high, window_dilation, base_dilation, reversal
- select-and-scatter: called ``select`` and ``scatter``
- convolution: ``dnums`` (dict: input_batch_dimension, input_feature_dimension, input_spatial_dimensions,
  kernel_input_feature_dimension, kernel_output_feature_dimension, kernel_spatial_dimensions,
  output_batch_dimension, output_feature_dimension, output_spatial_dimensions), ``feature_group_count``,
  ``batch_group_count``
- while: called ``condition`` and ``body``; conditional: called ``branch_0`` .. ``branch_N`` (a pred
  conditional's true branch is ``branch_0``, false ``branch_1``); call: called ``to_apply``
- sort: ``dimensions`` (1-tuple), ``is_stable``
- custom-call: ``target``, ``backend_config``
- batch-norm-*: ``epsilon``, ``feature_index``; reduce-precision: ``exponent_bits``, ``mantissa_bits``
- fusion (made by the fusion pass): ``kind`` ('expression'); called ``fused`` whose parameters are the
  fusion's operands in order
"""
from .ir import Alias, Computation, Instruction, Module, Shape, np_dtype, hlo_dtype  # noqa: F401
