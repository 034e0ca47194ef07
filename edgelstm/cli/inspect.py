"""``edgelstm inspect MODEL.onnx``: what an exported model is, without running it.

Shows the manifest, the inputs / outputs / recurrent states, the operator histogram (ops inside
control-flow subgraphs such as ``If`` / ``Loop`` / ``Scan`` bodies are counted separately), the
parameter count and file size, and which execution providers ``--device`` would use here.

Torch-free and onnx-free (works on a device install): the graph is read from the protobuf wire
format (:mod:`edgelstm.runtime.graphfacts`, on the integrity module's wire reader), the manifest
and the I/O signature through an onnxruntime CPU session. A seq2seq export (the stem ``X.onnx`` or either of ``X.encoder.onnx`` /
``X.decoder_step.onnx``) shows both graphs.
"""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from edgelstm.cli import options
from edgelstm.errors import ModelFileError
from edgelstm.units import format_size

SCHEMA = "edgelstm.inspect/1"


def read_graph(path: Path, data: bytes) -> dict[str, Any]:
    """Model-level facts parsed from the file bytes (no onnx package): :mod:`edgelstm.runtime.graphfacts`."""
    from edgelstm.runtime.graphfacts import read_graph_facts
    from edgelstm.runtime.integrity import WireError

    try:
        f = read_graph_facts(data)
    except (WireError, IndexError, ValueError) as e:
        raise ModelFileError(str(path), "not a readable ONNX model", expected="an ONNX ModelProto",
                             got=str(e)) from None
    return {"ir_version": f.ir_version, "producer": f.producer, "opsets": f.opsets, "nodes": f.nodes,
            "ops": dict(sorted(f.ops.items())), "subgraph_ops": dict(sorted(f.subgraph_ops.items())),
            "subgraphs": f.subgraphs, "initializers": f.initializer_count, "parameters": f.parameters,
            "weight_bytes": f.weight_bytes}


# ------------------------------------------------------------------------------------ one file
def _io(args) -> list[dict[str, Any]]:
    from edgelstm.runtime.providers import ort_type_to_dtype

    return [{"name": a.name, "dtype": ort_type_to_dtype(a.type), "shape": list(a.shape)} for a in args]


def describe_file(path: Path, *, trust_modified: bool = False) -> dict[str, Any]:
    """Everything inspect knows about one ONNX file (JSON-ready). The file goes through the
    runtime's integrity check first; ``digest`` is "ok" (sealed and intact), "mismatch" or
    "unsealed" (only seen with ``trust_modified``), None for a foreign file."""
    from edgelstm.runtime.integrity import check_model_bytes, read_model_bytes, seal_problem
    from edgelstm.runtime.session import create_session, session_options
    from edgelstm.runtime.providers import plan_providers

    p, data = read_model_bytes(path)
    problem = seal_problem(data, str(p))
    manifest = check_model_bytes(data, str(p), trust_modified=trust_modified)
    facts = read_graph(p, data)
    # a CPU session with no graph optimization: only the signature and metadata are read
    session = create_session(p, plan_providers("cpu"), session_options(optimization="none", record_placement=False))
    inputs, outputs = _io(session.get_inputs()), _io(session.get_outputs())
    by_in = {t["name"]: t for t in inputs}
    if manifest is not None:
        states = [{"input": s.input, "output": s.output, "dtype": s.dtype, "shape": list(s.shape)}
                  for s in manifest.states]
        digest = "ok" if problem is None else ("mismatch" if "mismatch" in problem[0] else "unsealed")
    else:  # the runtime's convention for bare graphs: NAME_in fed from NAME_out
        from edgelstm.runtime.interface import pair_states

        pairs = dict(pair_states([t["name"] for t in inputs], [t["name"] for t in outputs]))
        states = [{"input": t["name"], "output": pairs[t["name"]], "dtype": t["dtype"], "shape": t["shape"]}
                  for t in inputs if t["name"] in pairs]
        digest = None
    for s in states:  # the session's view of the state input, where the manifest is silent
        if s["input"] in by_in and not s["shape"]:
            s["shape"] = by_in[s["input"]]["shape"]
    return {
        "path": str(p), "role": manifest.graph if manifest else "model", "file_bytes": len(data),
        "manifest": asdict(manifest) if manifest else None, "digest": digest,
        "inputs": inputs, "outputs": outputs, "states": states, **facts,
    }


def _graph_paths(path: Path) -> list[Path]:
    """The files to describe: one, or a seq2seq pair (encoder first)."""
    from edgelstm.runtime.interface import pair_stem
    from edgelstm.runtime.seq2seq import companion_paths

    pair = companion_paths(path)
    if pair is not None and (not path.exists() or pair_stem(path.name)[1] is not None):
        return list(pair)
    return [path]


def inspect_model(path: str | Path, device: str = "auto", *, trust_modified: bool = False) -> dict[str, Any]:
    """The full inspect report for ``path``: graphs (one, or a seq2seq pair) and the provider plan."""
    import onnxruntime as ort

    from edgelstm.runtime.providers import plan_providers

    p = Path(path)
    graphs = [describe_file(g, trust_modified=trust_modified) for g in _graph_paths(p)]
    if len(graphs) == 1:  # an encoder / decoder step whose companion is named differently from the stem
        m = graphs[0]["manifest"]
        role = graphs[0]["role"]
        if m and role in ("encoder", "decoder_step"):
            other = m["companions"].get("decoder_step" if role == "encoder" else "encoder")
            other_path = Path(graphs[0]["path"]).with_name(other) if other else None
            if other_path is None or not other_path.exists():
                raise ModelFileError(str(p), f"the {role} graph's companion file is missing",
                                     expected=str(other_path) if other_path else "a companion named in the manifest",
                                     got="no such file")
            g2 = describe_file(other_path, trust_modified=trust_modified)
            graphs = [graphs[0], g2] if role == "encoder" else [g2, graphs[0]]
    # the fallback is reported in the result, not as a warning on stderr
    runtime_log = logging.getLogger("edgelstm.runtime")
    was_disabled, runtime_log.disabled = runtime_log.disabled, True
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            plan = plan_providers(device, fallback=True)
    finally:
        runtime_log.disabled = was_disabled
    notes = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    providers = {"device": device if isinstance(device, str) else list(device),
                 "available": list(ort.get_available_providers()), "requested": list(plan.requested),
                 "chosen": list(plan.providers), "primary": plan.primary, "fell_back": plan.fell_back,
                 "note": notes[0] if notes else None}
    return {"schema": SCHEMA, "path": str(p), "kind": "seq2seq" if len(graphs) == 2 else "model",
            "graphs": graphs, "file_bytes": sum(g["file_bytes"] for g in graphs),
            "parameters": sum(g["parameters"] for g in graphs), "providers": providers}


# ------------------------------------------------------------------------------------ text
def _shape(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _tensor_rows(rows: list[dict], indent: str = "    ") -> list[str]:
    if not rows:
        return [f"{indent}(none)"]
    w = max(len(r["name"]) for r in rows)
    return [f"{indent}{r['name']:<{w}}  {r['dtype']:<8} {_shape(r['shape'])}" for r in rows]


_MANIFEST_ORDER = ("family", "task", "graph", "precision", "layers", "hidden_size", "directions", "streamable")


def _manifest_lines(m: dict) -> list[str]:
    shown = {"inputs", "outputs", "states", "extra", "schema_version"}  # listed elsewhere
    items = [(k, m[k]) for k in _MANIFEST_ORDER if k in m]
    items += [(k, m[k]) for k in sorted(m) if k not in _MANIFEST_ORDER and k not in shown]
    items += [(f"extra.{k}", v) for k, v in sorted((m.get("extra") or {}).items())]
    lines = []
    for key, value in items:
        if value in (None, {}, []):
            continue
        if key == "vocab" and isinstance(value, list) and len(value) > 12:
            value = f"{len(value)} tokens: {json.dumps(value[:12])[:-1]}, ...]"
        elif key == "labels" and isinstance(value, list) and len(value) > 20:
            value = f"{len(value)} labels: {json.dumps(value[:20])[:-1]}, ...]"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, sort_keys=True)
        lines.append(f"    {key:<20} {value}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    out: list[str] = []
    for g in report["graphs"]:
        title = g["path"] + (f"  ({g['role']})" if g["role"] != "model" else "")
        out += [title, "=" * len(title)]
        out.append(f"  file        {format_size(g['file_bytes'])} ({g['file_bytes']} bytes)")
        out.append(f"  parameters  {g['parameters']:,} in {g['initializers']} initializers "
                   f"({format_size(g['weight_bytes'])} of weights)")
        opsets = ", ".join(f"{d} {v}" for d, v in g["opsets"].items())
        out.append(f"  onnx        ir {g['ir_version']}, opsets {opsets}" + (f", by {g['producer']}" if g["producer"] else ""))
        if g["manifest"] is None:
            out.append("  manifest    none (not an edgelstm export; states inferred from NAME_in/NAME_out)")
        else:
            digest = {"ok": "sealed (graph + manifest intact)",
                      "mismatch": "SEAL MISMATCH (graph or manifest edited after export)",
                      "unsealed": "NOT SEALED (seal removed, or an older edgelstm)"}[g["digest"]]
            out.append(f"  manifest    schema {g['manifest']['schema_version']}, {digest}")
            out += _manifest_lines(g["manifest"])
        out.append("  inputs")
        out += _tensor_rows(g["inputs"])
        out.append("  outputs")
        out += _tensor_rows(g["outputs"])
        out.append("  states")
        out += ([f"    {s['input']} <- {s['output']}  {s['dtype']:<8} {_shape(s['shape'])}" for s in g["states"]]
                or ["    (none)"])
        out.append(f"  ops ({g['nodes']} nodes)")
        w = max((len(k) for k in [*g["ops"], *g["subgraph_ops"]]), default=0)
        out += [f"    {op:<{w}}  {n}" for op, n in sorted(g["ops"].items(), key=lambda kv: (-kv[1], kv[0]))]
        if g["subgraph_ops"]:
            where = ", ".join(f"{s['op']}.{s['attribute']}" + (f" ({s['node']})" if s["node"] else "")
                              for s in g["subgraphs"])
            out.append(f"  ops inside subgraphs ({len(g['subgraphs'])}: {where})")
            out += [f"    {op:<{w}}  {n}" for op, n in sorted(g["subgraph_ops"].items(), key=lambda kv: (-kv[1], kv[0]))]
        out.append("")
    pr = report["providers"]
    out.append("providers")
    out.append(f"  available   {', '.join(pr['available'])}")
    out.append(f"  --device {pr['device']}: {' -> '.join(pr['chosen'])}"
               + (f"  (wanted {pr['primary']}: not available, falls back)" if pr["fell_back"] else ""))
    return "\n".join(out)


# ------------------------------------------------------------------------------------ command
@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--device", default="auto", show_default=True,
              help="Device whose provider choice to show: auto, cpu, cuda, tensorrt, arm, coreml, nnapi, qnn, "
                   "or onnxruntime provider names, comma-separated.")
@options.json_out
@options.trust_modified
def inspect_command(model: Path, device: str, json_out: Path | None, trust_modified: bool):
    """Describe an exported model (or any ONNX file): manifest, inputs, outputs and states,
    operator histogram, parameters and size, and the execution providers --device picks here.

    MODEL is an .onnx file, or a seq2seq export given by its stem or either of its two files.
    """
    report = inspect_model(model, device=device, trust_modified=trust_modified)
    if json_out is not None:
        options.write_json(json_out, SCHEMA, report, default=str)
        if json_out == "-":
            return 0
    click.echo(format_report(report))
    if json_out is not None:
        click.echo(f"\nwrote {json_out}")
    return 0


commands = {"inspect": inspect_command}
