"""Graph cleaning: constants to named initializers, constant folding, no Identity, no dead
nodes, no redundant transposes. Pure ``onnx`` + NumPy; every pass keeps the graph's meaning.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
#: Ops never folded even with constant inputs (random, or pointless to evaluate).
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
            "Bernoulli", "LSTM", "GRU", "RNN", "Loop", "Scan", "If"}
#: Folding a node whose output would exceed this many elements is skipped (keeps files small).
_FOLD_MAX_ELEMENTS = 1 << 22

RECURRENT_INPUT_NAMES = {"LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
                         "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
                         "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"]}


def op_counts(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    use: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                use.setdefault(i, []).append(n)
    return use


def _rename_input(graph: onnx.GraphProto, old: str, new: str) -> None:
    for n in graph.node:
        for k, i in enumerate(n.input):
            if i == old:
                n.input[k] = new


def constants_to_initializers(model: onnx.ModelProto) -> int:
    g = model.graph
    keep, moved = [], 0
    for n in g.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(n.attribute[0].t)
            t.name = n.output[0]
            g.initializer.append(t)
            moved += 1
        else:
            keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    return moved


def fold_constants(model: onnx.ModelProto) -> int:
    """Evaluate nodes whose inputs are all initializers (onnx's reference evaluator, one node at a time)."""
    from onnx.reference import ReferenceEvaluator  # noqa: PLC0415 - only needed when folding

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    graph_outputs = {o.name for o in g.output}
    folded = 0
    changed = True
    while changed:
        changed = False
        keep = []
        for n in g.node:
            ins = [i for i in n.input if i]
            if (n.op_type in _NO_FOLD or n.domain not in ("", "ai.onnx") or not ins
                    or not all(i in inits for i in ins) or any(o in graph_outputs for o in n.output)):
                keep.append(n)
                continue
            try:
                sub = helper.make_graph([n], "fold", [], [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None)
                                                          for o in n.output if o],
                                        initializer=[inits[i] for i in ins])
                ev = ReferenceEvaluator(helper.make_model(sub, opset_imports=model.opset_import))
                values = ev.run(None, {})
            except Exception as e:  # an op the evaluator can't run: leave it in the graph
                log.debug("not folding %s (%s): %s", n.name, n.op_type, e)
                keep.append(n)
                continue
            if any(np.asarray(v).size > _FOLD_MAX_ELEMENTS for v in values):
                keep.append(n)
                continue
            for name, v in zip([o for o in n.output if o], values):
                t = numpy_helper.from_array(np.asarray(v), name)
                g.initializer.append(t)
                inits[name] = t
            folded += 1
            changed = True
        del g.node[:]
        g.node.extend(keep)
    return folded


def remove_identities(model: onnx.ModelProto) -> int:
    """Drop Identity nodes (and Cast to the type a value already has is left to onnx shape info)."""
    g = model.graph
    graph_outputs = {o.name for o in g.output}
    graph_inputs = {i.name for i in g.input} | {t.name for t in g.initializer}
    removed = 0
    for n in list(g.node):
        if n.op_type != "Identity":
            continue
        src, dst = n.input[0], n.output[0]
        if dst in graph_outputs:
            if src in graph_inputs or src in graph_outputs:
                continue  # an output that is an input: Identity is needed
            # rename the producer's output to the graph output name
            for p in g.node:
                for k, o in enumerate(p.output):
                    if o == src:
                        p.output[k] = dst
            _rename_input(g, src, dst)
        else:
            _rename_input(g, dst, src)
        g.node.remove(n)
        removed += 1
    return removed


def remove_noop_casts(model: onnx.ModelProto) -> int:
    """Cast to the type a value already has becomes Identity (removed by :func:`remove_identities`)."""
    g = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception as e:  # leave the graph as is; the checks after cleaning report real problems
        log.debug("shape inference failed while looking for no-op casts: %s", e)
        return 0
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.input) + list(inferred.value_info) + list(inferred.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    changed = 0
    for n in g.node:
        if n.op_type != "Cast":
            continue
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        if to is not None and types.get(n.input[0]) == to:
            n.op_type = "Identity"
            del n.attribute[:]
            changed += 1
    return changed


def fuse_transposes(model: onnx.ModelProto) -> int:
    """Transpose(Transpose(x, p1), p2) -> Transpose(x, p1∘p2), identity perms removed."""
    g = model.graph
    graph_outputs = {o.name for o in g.output}
    changed = 0
    progress = True
    while progress:
        progress = False
        producers = {o: n for n in g.node for o in n.output}
        use = _consumers(g)
        for n in list(g.node):
            if n.op_type != "Transpose":
                continue
            p2 = list(helper.get_attribute_value(next(a for a in n.attribute if a.name == "perm")))
            first = producers.get(n.input[0])
            if first is not None and first.op_type == "Transpose" and len(use.get(first.output[0], [])) == 1 \
                    and first.output[0] not in graph_outputs:
                p1 = list(helper.get_attribute_value(next(a for a in first.attribute if a.name == "perm")))
                combined = [p1[i] for i in p2]
                n.input[0] = first.input[0]
                del n.attribute[:]
                n.attribute.append(helper.make_attribute("perm", combined))
                g.node.remove(first)
                changed += 1
                progress = True
                break
            if p2 == list(range(len(p2))) and n.output[0] not in graph_outputs:
                _rename_input(g, n.output[0], n.input[0])
                g.node.remove(n)
                changed += 1
                progress = True
                break
    return changed


def remove_dead(model: onnx.ModelProto) -> int:
    """Nodes whose outputs reach no graph output, and initializers nothing reads."""
    g = model.graph
    needed = {o.name for o in g.output}
    live = []
    for n in reversed(g.node):
        if any(o in needed for o in n.output if o):
            live.append(n)
            needed.update(i for i in n.input if i)
    removed = len(g.node) - len(live)
    live.reverse()
    del g.node[:]
    g.node.extend(live)
    used_inits = [t for t in g.initializer if t.name in needed]
    removed_inits = len(g.initializer) - len(used_inits)
    del g.initializer[:]
    g.initializer.extend(used_inits)
    # value_info of names that no longer exist
    names = {o for n in g.node for o in n.output}
    vi = [v for v in g.value_info if v.name in names]
    del g.value_info[:]
    g.value_info.extend(vi)
    if removed_inits:
        log.debug("removed %d unused initializers", removed_inits)
    return removed


def name_recurrent_weights(model: onnx.ModelProto, node_prefixes: list[str] | None = None) -> None:
    """Give recurrent nodes and their weight initializers readable names: ``<module>.l<k>.W``.

    ``node_prefixes`` is the module path of each recurrent node in graph order (one per layer);
    without it the nodes are named ``rnn<i>``.
    """
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    use = _consumers(g)
    rec = [n for n in g.node if n.op_type in RECURRENT_OPS]
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    rec_only = {name for name, users in use.items() if all(u.op_type in RECURRENT_OPS for u in users)}
    for k, n in enumerate(rec):
        base = node_prefixes[k] if node_prefixes and k < len(node_prefixes) else f"rnn{k}"
        n.name = base if base not in {m.name for m in rec[:k]} else f"{base}.call{k}"
        for slot, inp in enumerate(n.input):
            # a weight read by this node only, or shared by the calls of one module (a loop): its first node names it
            if inp in inits and inp in rec_only and inp not in {i for m in rec[:k] for i in m.input}:
                new = f"{base}.{RECURRENT_INPUT_NAMES[n.op_type][slot]}"
                if new in taken:
                    continue
                inits[inp].name = new
                for user in use[inp]:
                    for j, i in enumerate(user.input):
                        if i == inp:
                            user.input[j] = new
                taken.add(new)


def dedupe_initializers(model: onnx.ModelProto) -> int:
    """Identical initializers share one: small constants (Slice starts, Reshape shapes...) and the
    weights of a module called at every step of an unrolled loop (a decoder loop over a cell
    emits them once per step). Compared by dtype, dims and bytes (a digest, then the bytes)."""
    import hashlib  # noqa: PLC0415

    g = model.graph
    seen: dict[tuple, onnx.TensorProto] = {}
    alias: dict[str, str] = {}
    keep = []
    for t in g.initializer:
        data = numpy_helper.to_array(t).tobytes()
        key = (t.data_type, tuple(t.dims), hashlib.sha256(data).digest())
        first = seen.get(key)
        if first is not None and numpy_helper.to_array(first).tobytes() == data:
            alias[t.name] = first.name
        else:
            seen.setdefault(key, t)
            keep.append(t)
    if alias:
        for n in g.node:
            for k, i in enumerate(n.input):
                if i in alias:
                    n.input[k] = alias[i]
        del g.initializer[:]
        g.initializer.extend(keep)
    return len(alias)


def strip_wrapper_scopes(model: onnx.ModelProto, prefixes: tuple[str, ...]) -> None:
    """Drop the export wrapper's scope from value, node and initializer names
    (``inner.model.head.weight`` -> ``head.weight``, ``/inner/model/Gather`` -> ``/Gather``)."""
    g = model.graph
    fixed = {i.name for i in g.input} | {o.name for o in g.output}
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | fixed

    def strip(name: str) -> str:
        for p in prefixes:
            if name.startswith(p):
                return name[len(p):] if not p.startswith("/") else "/" + name[len(p):]
            if name.startswith("onnx::") or not name:
                return name
        return name

    mapping: dict[str, str] = {}
    for name in sorted(taken - fixed):
        new = strip(name)
        if new != name and new not in taken and new not in mapping.values():
            mapping[name] = new
    for t in g.initializer:
        t.name = mapping.get(t.name, t.name)
    for n in g.node:
        n.name = strip(n.name)
        for k, i in enumerate(n.input):
            n.input[k] = mapping.get(i, i)
        for k, o in enumerate(n.output):
            n.output[k] = mapping.get(o, o)
    for v in g.value_info:
        v.name = mapping.get(v.name, v.name)
    # exporter-made names ("onnx::MatMul_63", a folded transposed weight) -> "<scope>.<Op>.in<k>"
    use = _consumers(g)
    taken = {t.name for t in g.initializer} | {o for n in g.node for o in n.output} | fixed
    for t in g.initializer:
        users = use.get(t.name, [])
        if not t.name.startswith("onnx::") or len(users) != 1 or not users[0].name:
            continue
        node = users[0]
        scope = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".") if "/" in node.name.strip("/") else ""
        new = ".".join(p for p in (scope, node.op_type, f"in{list(node.input).index(t.name)}") if p)
        if new in taken:
            continue
        taken.add(new)
        for k, i in enumerate(node.input):
            if i == t.name:
                node.input[k] = new
        t.name = new


def clean(model: onnx.ModelProto, node_prefixes: list[str] | None = None,
          wrapper_scopes: tuple[str, ...] = ()) -> dict[str, int]:
    """Run every pass to a fixed point; returns how much each pass did."""
    stats = Counter()
    stats["constants_to_initializers"] += constants_to_initializers(model)
    for _ in range(4):
        before = sum(stats.values())
        stats["folded"] += fold_constants(model)
        stats["noop_casts_removed"] += remove_noop_casts(model)
        stats["identities_removed"] += remove_identities(model)
        stats["transposes_fused"] += fuse_transposes(model)
        stats["dead_removed"] += remove_dead(model)
        if sum(stats.values()) == before:
            break
    stats["initializers_deduplicated"] += dedupe_initializers(model)
    if wrapper_scopes:
        strip_wrapper_scopes(model, wrapper_scopes)
    name_recurrent_weights(model, node_prefixes)
    return dict(stats)


def check_fused(model: onnx.ModelProto) -> list[str]:
    """Problems with the recurrent structure: Loop/Scan present, no recurrent node, etc."""
    problems = []
    ops = op_counts(model)
    for bad in ("Loop", "Scan"):
        if ops.get(bad):
            problems.append(f"graph holds {ops[bad]} {bad} node(s)")
    return problems
