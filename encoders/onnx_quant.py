"""int8 text graphs whose activations are quantized per token, so no text's numbers depend on another's."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

MS_DOMAIN = "com.microsoft"


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """int8 weights (one scale per output channel) and int8 activations with one scale per token.

    ``quantize_dynamic`` quantizes each matrix product's input with one scale and zero
    point for the whole tensor of a run (``DynamicQuantizeLinear``): every text of a batch,
    and its padding, moved every other text's features (up to 5 of 64 code bits). Here
    each token's row gets its own symmetric scale (``max|x| / 127``, zero point 128),
    computed from that row alone, and the integer product is scaled back per row: a
    token's numbers depend on its own row and the weights only. Closer to the fp32
    features than the per-tensor scheme (mean cosine 0.997 against 0.994 on COCO captions;
    BENCHMARKS.md, "Codes that do not depend on the batch").

    Args:
        src: the fp32 ONNX graph.
        dst: where to write the int8 graph (through a temporary file, then renamed).

    Returns:
        ``dst``.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dst = Path(dst)
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")
    quiet = _NoPreprocessingAdvice()
    root = logging.getLogger()  # quantize_dynamic advises through logging.warning (the root)
    root.addFilter(quiet)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.removeFilter(quiet)
    model = onnx.load(str(tmp))
    per_token_activations(model)
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)
    return dst


class _NoPreprocessingAdvice(logging.Filter):
    """Drops ONNX Runtime's advice to pre-process the graph before quantizing it (shape
    inference for static quantization; nothing to act on for this dynamic one), and its
    per-tensor INFO lines ("Quantization parameters for tensor ... not specified", "Ignore
    MatMul due to non constant B"), which a terminal at INFO would show by the dozen."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno >= logging.WARNING
                and not record.getMessage().startswith("Please consider to run pre-processing"))


def per_token_activations(model) -> None:
    """Rewrite a ``quantize_dynamic`` graph in place: per-token activation scales.

    Each ``DynamicQuantizeLinear(x)`` becomes ``s = max(|x|) / 127`` over x's last axis
    and ``q = QuantizeLinear(x * (1 / s), 1, 128)``; each ``MatMulInteger -> Cast -> Mul(
    s_x * s_w) -> Add(bias)`` that used it becomes ``MatMulIntegerToFloat(q, W, 1, s_w,
    128, z_w) * s + bias``. The MatMulIntegerToFloat is written out here: ONNX Runtime's
    own fusion into it takes the activation scale for a scalar and gave wrong features
    (cosine 0.71) from a per-row one.

    Args:
        model: an ``onnx.ModelProto`` written by ``quantize_dynamic``.

    Raises:
        ValueError: a quantized product does not have the expected form (nothing usable
            would come out; the graph is left half rewritten).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producer = {out: node for node in graph.node for out in node.output}
    constants = {"pt_127": np.float32(127.0), "pt_tiny": np.finfo(np.float32).tiny,
                 "pt_one": np.float32(1.0), "pt_128": np.uint8(128)}
    graph.initializer.extend(numpy_helper.from_array(np.asarray(v), k)
                             for k, v in constants.items())
    replaced: set[int] = set()  # id() of nodes folded into a rewritten product
    nodes = []
    for node in graph.node:
        if id(node) in replaced:
            continue
        if node.op_type != "DynamicQuantizeLinear":
            nodes.append(node)
            continue
        x, (q, scale, _) = node.input[0], node.output
        p = node.name + "_per_token"
        nodes += [helper.make_node("Abs", [x], [p + "_abs"]),
                  helper.make_node("ReduceMax", [p + "_abs"], [p + "_amax"], axes=[-1],
                                   keepdims=1),
                  helper.make_node("Max", [p + "_amax", "pt_tiny"], [p + "_amax1"]),
                  helper.make_node("Div", [p + "_amax1", "pt_127"], [scale]),
                  helper.make_node("Div", ["pt_127", p + "_amax1"], [p + "_inv"]),
                  helper.make_node("Mul", [x, p + "_inv"], [p + "_scaled"]),
                  helper.make_node("QuantizeLinear", [p + "_scaled", "pt_one", "pt_128"], [q])]
        for matmul in consumers.get(q, []):
            nodes += _product(matmul, scale, consumers, producer, replaced)
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(o.domain == MS_DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))


def _product(matmul, scale: str, consumers: dict, producer: dict, replaced: set) -> list:
    """The nodes replacing one MatMulInteger -> Cast -> Mul -> Add(bias) chain."""
    from onnx import helper

    def only(name: str, op: str):
        found = consumers.get(name, [])
        if len(found) != 1 or found[0].op_type != op:
            raise ValueError(f"{matmul.name}: expected one {op} after {name}, found "
                             f"{[n.op_type for n in found]}")
        return found[0]

    if matmul.op_type != "MatMulInteger":
        raise ValueError(f"{matmul.name}: a quantized activation feeds {matmul.op_type}")
    cast = only(matmul.output[0], "Cast")
    mul = only(cast.output[0], "Mul")
    scales = producer[next(i for i in mul.input if i != cast.output[0])]
    if scales.op_type != "Mul" or scale not in scales.input:
        raise ValueError(f"{matmul.name}: the output is not scaled by the activation's scale")
    weight_scale = next(i for i in scales.input if i != scale)
    replaced.update({id(matmul), id(cast), id(mul)})
    if len(consumers.get(scales.output[0], [])) == 1:
        replaced.add(id(scales))
    p = matmul.name + "_per_token"
    return [helper.make_node("MatMulIntegerToFloat",
                             [matmul.input[0], matmul.input[1], "pt_one", weight_scale, "pt_128",
                              matmul.input[3]], [p + "_f"], domain=MS_DOMAIN, name=p),
            helper.make_node("Mul", [p + "_f", scale], [mul.output[0]], name=p + "_row_scale")]
