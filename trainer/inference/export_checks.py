"""Static checks of an export's graph that need no trust: parsed, never run (nothing here prints).

- SavedModel: ``saved_model.pb`` parsed with protobuf; every op of every function the loader can
  run (those reachable from the object graph) must be in ``SAVEDMODEL_SAFE_OPS`` (arithmetic,
  neural-network, array and variable ops, calls and control flow); checkpoint I/O (``SaveV2``,
  ``RestoreV2``, ...) only in the saver's own functions, which ``tf.saved_model.load`` does not run.
  File reads and writes (``ReadFile``, ``WriteFile``, ``PrintV2``), ``PyFunc``, datasets, strings
  and everything else are refused. A TF1 SavedModel (no object graph) is refused.
- ONNX: no tensor may keep its data outside the file (external data names arbitrary paths), and
  every node's domain is one onnxruntime implements itself (no custom-op domains, no local functions).
- LiteRT: no custom operators (Flex ops are TensorFlow ops, file I/O included) and no external buffers.

A refusal is an ``UnsafeExportError`` (exit 2) naming the file, the op and ``--trust-export``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from trainer.errors import RunDirError

TRUST_HINT = "run it anyway only if you trust whoever made it: --trust-export (it runs the export's graph as a program)"

SAVEDMODEL_SAFE_OPS = frozenset("""
Abs Acos Acosh Add AddN AddV2 All Any ArgMax ArgMin Asin Asinh Atan Atan2 Atanh AvgPool AvgPool3D
BatchMatMul BatchMatMulV2 BatchMatMulV3 BiasAdd Bitcast BroadcastArgs BroadcastGradientArgs BroadcastTo
Cast Ceil CheckNumerics ClipByValue ConcatV2 Const Conv Conv2D Conv2DBackpropInput Conv3D Conv3DBackpropInputV2
Cos Cosh Cumprod Cumsum DepthToSpace DepthwiseConv2dNative Diag DiagPart Div DivNoNan Einsum Elu EnsureShape Equal
Erf Erfc Exp ExpandDims Expm1 Fill Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV2 FusedBatchNormV3
GatherNd GatherV2 Greater GreaterEqual Identity IdentityN If Inv InvertPermutation IsFinite IsInf IsNan L2Loss
LeakyRelu Less LessEqual Lgamma Log Log1p LogSoftmax LogicalAnd LogicalNot LogicalOr MatMul MatrixBandPart
MatrixDiag MatrixDiagPartV3 MatrixDiagV3 Max MaxPool MaxPool3D MaxPoolV2 Maximum Mean Min Minimum MirrorPad Mod Mul
MulNoNan Neg NoOp NotEqual OneHot OnesLike Pack Pad PadV2 PartitionedCall Placeholder PlaceholderWithDefault Pow
PreventGradient Prod Range Rank ReadVariableOp RealDiv Reciprocal Relu Relu6 Reshape ResizeArea ResizeBicubic
ResizeBilinear ResizeNearestNeighbor ReverseV2 Rint Round Rsqrt ScatterNd Select SelectV2 Selu Shape ShapeN
Sigmoid Sign Sin Sinh Size Slice Snapshot Softmax Softplus Softsign SpaceToDepth Split SplitV Sqrt Square
SquaredDifference Squeeze StatefulPartitionedCall StatelessIf StatelessWhile StopGradient StridedSlice Sub Sum
Tan Tanh TensorScatterUpdate Tile TopKV2 Transpose Unpack VarHandleOp VarIsInitializedOp AssignVariableOp
AssignAddVariableOp AssignSubVariableOp Where While ZerosLike
""".split())

# The saver's functions write and read checkpoints; the TF2 loader restores variables with ops of its own.
SAVEDMODEL_CHECKPOINT_OPS = frozenset(
    "DisableCopyOnRead MergeV2Checkpoints RestoreV2 SaveV2 ShardedFilename StaticRegexFullMatch StringJoin".split()
)

# domains whose operators onnxruntime implements itself ("" is the default ai.onnx domain)
ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft"})


class UnsafeExportError(RunDirError):
    """An export's graph holds something that could touch files or run code: exit 2."""


def _refuse(path: Path, what: str) -> UnsafeExportError:
    return UnsafeExportError(f"{path}: {what}; trainer runs only exports whose graph computes and nothing else. To {TRUST_HINT}.")


def check_savedmodel_graph(saved_model_pb: bytes, path: Path) -> None:
    """Refuse a SavedModel whose loadable functions hold an op outside ``SAVEDMODEL_SAFE_OPS``."""
    from google.protobuf.message import DecodeError

    try:
        from tensorflow.core.protobuf import saved_model_pb2
    except ImportError:  # pragma: no cover - TensorFlow is a dependency
        raise _refuse(path, "TensorFlow's protobuf classes are missing, so the graph cannot be checked") from None
    model = saved_model_pb2.SavedModel()
    try:
        model.ParseFromString(saved_model_pb)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        raise RunDirError(f"{path}: is not a SavedModel protobuf ({str(exc)[:120] or type(exc).__name__}).") from None
    if len(model.meta_graphs) != 1:
        raise _refuse(path, f"holds {len(model.meta_graphs)} meta graphs (trainer's exports hold one)")
    meta = model.meta_graphs[0]
    roots = set(meta.object_graph_def.concrete_functions.keys())
    if not meta.object_graph_def.nodes or not roots:
        raise _refuse(path, "is a TF1 SavedModel (no object graph), which the loader runs through its init and restore ops")
    library = {function.signature.name: function for function in meta.graph_def.library.function}
    unknown = sorted(roots - set(library))
    if unknown:
        raise _refuse(path, f"names function {unknown[0]!r}, which its library does not hold")
    reachable = _reachable(roots, library)
    for name in sorted(library):
        allowed = SAVEDMODEL_SAFE_OPS if name in reachable else SAVEDMODEL_SAFE_OPS | SAVEDMODEL_CHECKPOINT_OPS
        for node in library[name].node_def:
            if node.op not in allowed and node.op not in library:
                where = "which the loader can run" if name in reachable else "of the saver"
                raise _refuse(path, f"op {node.op!r} (node {node.name!r} of function {name!r}, {where}) is not one trainer runs without trust")
    for node in meta.graph_def.node:
        if node.op not in SAVEDMODEL_SAFE_OPS | SAVEDMODEL_CHECKPOINT_OPS and node.op not in library:
            raise _refuse(path, f"op {node.op!r} (graph node {node.name!r}) is not one trainer runs without trust")


def _called(nodes: Iterable, library: dict) -> Iterable[str]:
    for node in nodes:
        if node.op in library:
            yield node.op
        for value in node.attr.values():
            if value.HasField("func"):
                yield value.func.name
            if value.HasField("list"):
                yield from (func.name for func in value.list.func)


def _reachable(roots: set[str], library: dict) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name not in library:
            continue
        seen.add(name)
        todo.extend(_called(library[name].node_def, library))
    return seen


def check_onnx_model(data: bytes, path: Path) -> None:
    """Refuse an ONNX model with external data or an operator domain onnxruntime does not implement itself."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, RuntimeError, ValueError, RecursionError) as exc:
        raise RunDirError(f"{path}: is not an ONNX model ({str(exc)[:120] or type(exc).__name__}).") from None
    if len(model.functions):
        raise _refuse(path, f"defines local functions ({model.functions[0].domain}.{model.functions[0].name})")
    for opset in model.opset_import:
        if opset.domain not in ONNX_DOMAINS:
            raise _refuse(path, f"imports the operator domain {opset.domain!r} (custom operators)")
    _check_onnx_graph(model.graph, path, onnx)


def _check_onnx_graph(graph, path: Path, onnx) -> None:
    tensors = list(graph.initializer)
    tensors += [t for sparse in graph.sparse_initializer for t in (sparse.values, sparse.indices)]
    for node in graph.node:
        if node.domain not in ONNX_DOMAINS:
            raise _refuse(path, f"node {node.name!r} is the custom operator {node.domain}.{node.op_type}")
        for attribute in node.attribute:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
            tensors.extend(attribute.tensors)
            if attribute.HasField("sparse_tensor"):
                tensors += [attribute.sparse_tensor.values, attribute.sparse_tensor.indices]
            if attribute.HasField("g"):
                _check_onnx_graph(attribute.g, path, onnx)
            for subgraph in attribute.graphs:
                _check_onnx_graph(subgraph, path, onnx)
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "?")
            raise _refuse(path, f"tensor {tensor.name!r} keeps its data in another file ({location!r}), which onnxruntime would read from anywhere")


def check_litert_model(data: bytes, path: Path) -> None:
    """Refuse a LiteRT flatbuffer with custom (Flex included) operators or external buffers."""
    from ai_edge_litert import schema_py_generated as schema

    try:
        if len(data) < 8:
            raise ValueError("too short")
        model = schema.Model.GetRootAs(data, 0)
        codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
        custom = next(
            (code for code in codes if schema.BuiltinOperator.CUSTOM in (code.BuiltinCode(), code.DeprecatedBuiltinCode()) or code.CustomCode()),
            None,
        )
        external = model.ExternalBuffersLength() or model.ExternalBufferGroupsLength()
    except Exception as exc:  # noqa: BLE001 - the flatbuffers reader raises whatever a damaged buffer makes it hit
        raise RunDirError(f"{path}: is not a LiteRT model ({str(exc)[:120] or type(exc).__name__}).") from None
    if custom is not None:
        name = (custom.CustomCode() or b"?").decode("utf-8", "replace")
        raise _refuse(path, f"uses the custom operator {name!r} (Flex operators are TensorFlow ops, file I/O included)")
    if external:
        raise _refuse(path, "keeps buffers in other files")


CHECKS = {"savedmodel": check_savedmodel_graph, "onnx": check_onnx_model, "litert": check_litert_model}
