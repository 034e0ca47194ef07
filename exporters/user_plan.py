"""A :class:`~edgelstm.exporters.plan.GraphPlan` for a user's own ``nn.Module``: the forward's
arguments from ``--input`` specs (tuple arguments rebuilt from their graph inputs), state inputs
and outputs (``--expose-state``, ``--state IN=OUT``, tuple pairs), the probe that names the
outputs, and the unmodified module as the parity reference.

Imports: numpy, torch, :mod:`edgelstm.errors`, :mod:`edgelstm.manifest`,
:mod:`edgelstm.exporters.plan` / ``recurrent`` / ``spec``, and the runtime's state-pairing rule.
Imported by :mod:`edgelstm.exporters.core` and :mod:`edgelstm.verify.backends`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from edgelstm.errors import ModelDefinitionError, UnsupportedError, UsageError
from edgelstm.exporters.plan import (ExportOptions, GraphPlan, GraphWrapper, StateBinding, UserModule, family_of,
                                     flatten_outputs, leaf_shapes, no_recurrent, rebuild_argument, run_forward,
                                     sizes_cases, sizes_of, to_torch)
from edgelstm.exporters.recurrent import describe, find_recurrent, proxies_installed, recurrent_kind
from edgelstm.exporters.spec import InputSpec, TupleArg, leaves, make_inputs, parse_argument, structure, time_axis_of
from edgelstm.manifest import Manifest, StateSpec


class _Bare(nn.Module):
    """Container for a bare recurrent module, so it can be swapped for its proxy."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.rnn = rnn

    def forward(self, *args):
        return self.rnn(*args)


def coerce_specs(inputs: Sequence[Any] | None, example: Sequence[torch.Tensor] | None) -> list[Any]:
    """The forward's arguments: :class:`InputSpec` (one tensor) or :class:`TupleArg` (a tuple)."""
    if inputs is not None:
        args = [parse_argument(s) if isinstance(s, str) else s for s in inputs]
    else:
        if not example:
            raise UsageError("export", "neither inputs nor example_inputs given",
                             expected="input specs such as 'x:float32[batch,time,8]' or example tensors", got=None)
        args = []
        for i, t in enumerate(example):
            name = "x" if len(example) == 1 else f"input_{i}"
            dims: list[Any] = list(t.shape)
            if len(dims) >= 1:
                dims[0] = "batch"
            if len(dims) >= 2:
                dims[1] = "time"
            args.append(InputSpec(name, str(t.detach().cpu().numpy().dtype), tuple(dims)))
    from edgelstm.exporters.spec import check_specs  # noqa: PLC0415

    check_specs(leaves(args))
    return args


def _check_axis_sizes(specs: list[InputSpec], sizes: dict[str, int], option: str) -> None:
    names = {d for sp in specs for d in sp.dims if isinstance(d, str)}
    for name, n in sizes.items():
        if name not in names:
            raise UsageError(f"{option} {name}={n}", "not a named axis of the inputs", expected=sorted(names), got=name)
        if not isinstance(n, int) or n < 1:
            raise UsageError(f"{option} {name}={n}", "a size must be a positive integer", expected=">= 1", got=n)


def plan_module(module: nn.Module, example_inputs: Sequence[torch.Tensor] | None, options: ExportOptions) -> GraphPlan:
    """A :class:`GraphPlan` for a user's own module (forward takes the listed arguments in order;
    a :class:`TupleArg` is rebuilt from its graph inputs). ``states`` pairs a state input with the
    output that is fed back to it (tuple arguments are paired with a tuple output of the same
    shapes by themselves, see :func:`probe_outputs`)."""
    if not isinstance(module, nn.Module):
        raise ModelDefinitionError("model", "not a torch.nn.Module", expected="nn.Module", got=type(module).__name__)
    root = _Bare(module) if recurrent_kind(module) is not None else module
    root.eval()
    inputs, lengths_input, expose_state, states = options.inputs, options.lengths_input, options.expose_state, options.states
    args = coerce_specs(inputs, example_inputs)
    specs = leaves(args)
    example_sizes, min_sizes = dict(options.example_sizes or {}), dict(options.min_sizes or {})
    _check_axis_sizes(specs, example_sizes, "--example-size")
    _check_axis_sizes(specs, min_sizes, "--min-size")
    low = [f"{n}={example_sizes[n]} < --min-size {m}" for n, m in min_sizes.items() if example_sizes.get(n, m) < m]
    if low:
        raise UsageError("--example-size", "below the minimum size", expected="--example-size >= --min-size", got=low)
    from edgelstm.exporters.spec import check_streaming_layout, data_input, is_batch_major  # noqa: PLC0415

    if lengths_input is not None:
        spec = next((s for s in specs if s.name == lengths_input), None)
        if spec is None:
            raise UsageError("--lengths-input", "not one of the inputs", expected=[s.name for s in specs],
                             got=lengths_input)
        if not spec.dtype.startswith("int") or len(spec.dims) != 1:
            raise UsageError(f"input {lengths_input}", "lengths must be a 1-D integer tensor",
                             expected="int32[batch] or int64[batch]", got=spec.text())
        check_streaming_layout(specs, lengths_input, option="--lengths-input")
    found = find_recurrent(root)
    if not found and not states and not any(isinstance(a, TupleArg) for a in args):
        raise no_recurrent(root, "model")
    layers = [describe(m, p) for p, m in found]
    user_names = [structure(a) for a in args]
    bindings: list[StateBinding] = []
    state_specs: list[InputSpec] = []
    manifest_states: list[StateSpec] = []
    if expose_state:
        check_streaming_layout(specs, lengths_input)
        cells = [layer.path for layer in layers if layer.is_cell]
        if cells or not layers:
            raise UnsupportedError("--expose-state", "a step module's state is its own forward argument",
                                   expected="the state declared as inputs: --input 'state=(h:float32[batch,H],"
                                   "c:float32[batch,H])' (paired with the output tuple by itself) or --state IN=OUT",
                                   got=f"cells {cells}" if cells else "no recurrent layer")
        for i, layer in enumerate(layers):
            sfx = "" if len(layers) == 1 else f"_{i}"
            b = StateBinding(i, f"h_in{sfx}", f"h_out{sfx}",
                             f"c_in{sfx}" if layer.has_cell else None, f"c_out{sfx}" if layer.has_cell else None,
                             path=layer.path)
            bindings.append(b)
            shape = (layer.state_size, "batch", layer.hidden_size)
            for n_in, n_out in ((b.h_in, b.h_out), (b.c_in, b.c_out)):
                if n_in:
                    state_specs.append(InputSpec(n_in, "float32", shape))
                    manifest_states.append(StateSpec(n_in, n_out, list(shape)))
    all_specs = specs + state_specs
    from edgelstm.exporters.spec import check_specs  # noqa: PLC0415

    check_specs(all_specs)
    example = None
    if example_inputs is not None:
        if len(example_inputs) != len(specs) or any(isinstance(a, TupleArg) for a in args):
            raise UsageError("example_inputs", "count differs from the inputs (give one tensor per graph input)",
                             expected=len(specs), got=len(example_inputs))
        example = {s.name: t.detach().cpu().numpy() for s, t in zip(specs, example_inputs)}
        if state_specs:
            sizes = sizes_of(specs, example)
            batch = sizes.get("batch", 1)
            for s in state_specs:
                example[s.name] = np.zeros(s.shape_for({"batch": batch}), np.float32)
    x = data_input(specs, lengths_input)
    time_axis = time_axis_of(specs, lengths_input)
    lengths_axis = (x.name, x.dims.index(time_axis)) if x is not None and time_axis in x.dims else None
    wrapper = GraphWrapper(root, [s.name for s in all_specs], user_names, lengths_input, bindings,
                           lengths_axis=lengths_axis)
    names = list(options.output_names) if options.output_names else []
    state_out_names = [n for b in bindings for n in (b.h_out, b.c_out) if n]
    meanings = {}
    for b in bindings:
        path = layers[b.index].path or "model"
        meanings[b.h_in] = f"initial hidden state of {path}"
        meanings[b.h_out] = f"final hidden state of {path}"
        if b.c_in:
            meanings[b.c_in] = f"initial cell state of {path}"
            meanings[b.c_out] = f"final cell state of {path}"
    if lengths_input:
        meanings[lengths_input] = "valid steps per sequence (ONNX sequence_lens of every recurrent node)"
    first = layers[0] if layers else None
    unidirectional = all(layer.directions == 1 for layer in layers)
    manifest = Manifest(
        family=family_of(layers) if layers else "custom", task="custom",
        layers=max(1, sum(layer.num_layers for layer in layers)), hidden_size=first.hidden_size if first else 1,
        directions=max((layer.directions for layer in layers), default=1), inputs=[], outputs=[],
        states=manifest_states, streamable=bool(expose_state) and unidirectional and is_batch_major(x),
        checkpoint_sha256=options.checkpoint_sha256,
        extra={"recurrent_modules": [{"path": layer.path, "kind": layer.kind, "layers": layer.num_layers,
                                      "hidden_size": layer.hidden_size, "directions": layer.directions,
                                      "batch_first": layer.batch_first} for layer in layers]})
    binding = {"call": "forward", "args": user_names, "lengths": lengths_input,
               "state": "recurrent modules" if expose_state else None}
    if min_sizes:  # --min-size: what the module cannot take less of, for verify's and quantize's data
        binding["min_sizes"] = dict(min_sizes)
    user = UserModule(example_sizes=example_sizes, min_sizes=min_sizes, declared_states=[tuple(p) for p in states],
                      state_output_names=state_out_names, binding=binding)
    plan = GraphPlan(root=root, wrapper=wrapper, inputs=all_specs, output_names=names, manifest=manifest,
                     lengths_input=lengths_input, example=example, int_high=options.int_high,
                     input_meanings={k: v for k, v in meanings.items() if k in {s.name for s in all_specs}},
                     output_meanings=meanings, stream_check=bool(expose_state) and unidirectional, user=user)
    if not expose_state:
        user.unmodified = _unmodified_reference(module, user_names, plan)
    return plan


def _unmodified_reference(module: nn.Module, user_names: list[Any], plan: GraphPlan):
    """The user's module as it is (no proxies, packing done by PyTorch): the parity reference."""
    def reference(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        named = {n: torch.from_numpy(np.ascontiguousarray(v)) for n, v in feeds.items()}
        with torch.no_grad():
            out = module(*[rebuild_argument(t, named) for t in user_names])
        return {n: t.detach().cpu().numpy() for n, t in zip(plan.output_names, flatten_outputs(out))}
    return reference


def _state_name(name: str) -> str:
    """The output fed back to state input ``name``: the pairing rule's (``h_in`` -> ``h_out``), else ``NAME_out``."""
    from edgelstm.runtime.interface import state_output_for

    return state_output_for(name) or f"{name}_out"


def probe_outputs(plan: GraphPlan, subject: str, args: list[Any]) -> None:
    """Run the forward once (proxies installed): count and name its outputs, pair state arguments
    with the outputs fed back to them, note how the forward packs sequences.

    A tuple argument is paired with the output (a top-level element of the result) that is a tuple
    of tensors of the same shapes; ``plan.user.declared_states`` (``--state IN=OUT``) pair by name.
    """
    user = plan.user
    state_names = user.state_output_names
    user_given = list(plan.output_names)
    found = find_recurrent(plan.root)
    layers = [describe(m, p) for p, m in found]
    names = [s.name for s in plan.inputs]
    sizes = sizes_cases(plan)[0][1]
    feeds = plan.example or make_inputs(plan.inputs, sizes, rng=np.random.default_rng(0),
                                        lengths_input=plan.lengths_input, int_high=plan.int_high)
    with proxies_installed(plan.root, found, layers) as session:
        outs = run_forward(plan.wrapper, to_torch(feeds, names), subject, feeds)
        user.sorted_lengths = any(session.packed)
        if session.raw_lengths:
            user.unmodified = None  # --lengths-input wires lengths the unmodified module never sees
    n_user = len(outs) - len(state_names)
    tree = plan.wrapper.last_output
    # tuple argument <-> output tuple of the same shapes
    pairs: dict[int, str] = {}  # flat output index -> state input name
    tops = tree if isinstance(tree, list) else [tree]
    offsets, k = [], 0
    for t in tops:
        offsets.append(k)
        k += len(leaf_shapes(t))
    shape_of = {s.name: tuple(feeds[s.name].shape) for s in plan.inputs}
    for a in args:
        if not isinstance(a, TupleArg):
            continue
        want = [shape_of[s.name] for s in leaves(a)]
        for t, off in [(tree, 0)] + list(zip(tops, offsets)):  # the whole result, or one element of it
            if isinstance(t, list) and leaf_shapes(t) == want and not any(off + i in pairs for i in range(len(want))):
                pairs.update({off + i: s.name for i, s in enumerate(leaves(a))})
                break
    if user_given:
        if len(user_given) != n_user:
            raise UsageError("--output-name", "count differs from the model's outputs", expected=n_user,
                             got=f"{len(user_given)} {user_given}")
        plan.output_names = user_given + state_names
    else:
        rest = [i for i in range(n_user) if i not in pairs]
        default = {i: ("y" if len(rest) == 1 else f"y{j}") for j, i in enumerate(rest)}
        default.update({i: _state_name(n) for i, n in pairs.items()})
        plan.output_names = [default[i] for i in range(n_user)] + state_names
    declared = [(n, plan.output_names[i]) for i, n in sorted(pairs.items())] + list(user.declared_states)
    out_shapes = {n: tuple(o.shape) for n, o in zip(plan.output_names, outs)}
    by_name = {s.name: s for s in plan.inputs}
    taken = {st.input for st in plan.manifest.states}
    for n_in, n_out in declared:
        if n_in not in by_name or n_out not in out_shapes:
            raise UsageError(f"--state {n_in}={n_out}", "not a graph input and output",
                             expected=f"an input of {sorted(by_name)} and an output of {plan.output_names}",
                             got=f"{n_in}={n_out}")
        if n_in in taken:
            continue
        if shape_of[n_in] != out_shapes[n_out]:
            raise UsageError(f"--state {n_in}={n_out}", "the output fed back has another shape than the input",
                             expected=list(shape_of[n_in]), got=list(out_shapes[n_out]))
        taken.add(n_in)
        plan.manifest.states.append(StateSpec(n_in, n_out, list(by_name[n_in].dims), by_name[n_in].dtype))
        plan.input_meanings.setdefault(n_in, "state fed back from " + n_out + " (zeros to start)")
        plan.output_meanings.setdefault(n_out, "next " + n_in)
    if not layers:
        if not plan.manifest.states:
            raise no_recurrent(plan.root, subject, "and no state input is fed back from an output")
        last = plan.manifest.states[0].shape[-1] if plan.manifest.states[0].shape else 1
        plan.manifest.hidden_size = last if isinstance(last, int) else 1
    if plan.manifest.states and not user.state_output_names:  # declared states, fed back by the caller
        from edgelstm.exporters.spec import data_input, is_batch_major  # noqa: PLC0415

        plan.stream_check = all(layer.directions == 1 for layer in layers)
        # `edgelstm run` / Model.stream take x as [batch, time, ...]: other layouts (a time-major
        # x, a one-step module) carry their state through the manifest's pairs, not marked streamable
        x = data_input([s for s in plan.inputs if s.name not in taken], plan.lengths_input)
        plan.manifest.streamable = plan.stream_check and is_batch_major(x)
