"""The keyword-spotting step with its LSTM written out as elementwise ONNX ops, against the fused
``LSTM`` node the exporter writes: does the fused kernel's own cost explain the step?

The exported 1x64 LSTM (40 features, 12 classes) is rewritten by hand for one step: ``[x, h]`` ->
one ``Gemm`` with ``[W; R]`` and the summed biases -> ``Split`` into the i, o, f, c gates ->
``Sigmoid`` / ``Tanh`` -> the cell and hidden updates -> the head ``Gemm``. Both graphs are
checked to give the same outputs (to float32 rounding), then stepped through io_binding in
alternating blocks, one thread; medians and the median block ratio are printed.
Measured 2026-12-01 on the 2-core VM: the unfused step 1.15x the fused one (each node has its
own cost), so the fused kernel is not what keeps the step above its floor.

    .venv/bin/python benchmarks/step_unfused.py
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto as TP  # noqa: E402
from onnx import helper as h  # noqa: E402
from onnx import numpy_helper as nh  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import step_floor as sf  # noqa: E402

from edgelstm.manifest import DEFAULT_OPSET  # noqa: E402
from edgelstm.runtime.session import session_options  # noqa: E402


def main() -> None:
    d = Path(tempfile.mkdtemp())
    path = sf.export("kws-lstm-1x64", d)
    m=onnx.load(str(path)); init={i.name: nh.to_array(i) for i in m.graph.initializer}
    W=init['rnn.l0.W'][0]; R=init['rnn.l0.R'][0]; B=init['rnn.l0.B'][0]; Hd=64; F=40
    hw=init['head.weight']; hb=init['head.bias']
    # ONNX gate order i,o,f,c
    WR=np.concatenate([W,R],1).T.astype(np.float32)  # [F+H, 4H]
    bias=(B[:4*Hd]+B[4*Hd:]).astype(np.float32)
    nodes=[h.make_node("Reshape",["x","shx"],["x2"]), h.make_node("Reshape",["h_in","shh"],["h2"]), h.make_node("Reshape",["c_in","shh"],["c2"]),
     h.make_node("Concat",["x2","h2"],["xh"],axis=1), h.make_node("Gemm",["xh","WR","bias"],["g"]),
     h.make_node("Split",["g"],["gi","go","gf","gc"],axis=1,num_outputs=4),
     h.make_node("Sigmoid",["gi"],["i"]),h.make_node("Sigmoid",["go"],["o"]),h.make_node("Sigmoid",["gf"],["f"]),h.make_node("Tanh",["gc"],["cc"]),
     h.make_node("Mul",["f","c2"],["fc"]),h.make_node("Mul",["i","cc"],["ic"]),h.make_node("Add",["fc","ic"],["c"]),
     h.make_node("Tanh",["c"],["tc"]),h.make_node("Mul",["o","tc"],["hh"]),
     h.make_node("Gemm",["hh","hw","hb"],["logits"],transB=1),
     h.make_node("Unsqueeze",["hh","ax0"],["h_out"]),h.make_node("Unsqueeze",["c","ax0"],["c_out"])]
    inits=[nh.from_array(WR,"WR"),nh.from_array(bias,"bias"),nh.from_array(hw,"hw"),nh.from_array(hb,"hb"),
     nh.from_array(np.array([-1,F],np.int64),"shx"),nh.from_array(np.array([-1,Hd],np.int64),"shh"),nh.from_array(np.array([0],np.int64),"ax0")]
    g=h.make_graph(nodes,"step",[h.make_tensor_value_info("x",TP.FLOAT,["batch",1,F]),h.make_tensor_value_info("h_in",TP.FLOAT,[1,"batch",Hd]),h.make_tensor_value_info("c_in",TP.FLOAT,[1,"batch",Hd])],
     [h.make_tensor_value_info("logits",TP.FLOAT,["batch",12]),h.make_tensor_value_info("h_out",TP.FLOAT,[1,"batch",Hd]),h.make_tensor_value_info("c_out",TP.FLOAT,[1,"batch",Hd])],inits)
    mm=h.make_model(g,opset_imports=[h.make_opsetid("", max(DEFAULT_OPSET, 18))]); mm.ir_version=8
    onnx.checker.check_model(mm)
    so=session_options(1, record_placement=False)
    s_l=ort.InferenceSession(str(path),so,providers=["CPUExecutionProvider"])
    s_d=ort.InferenceSession(mm.SerializeToString(),so,providers=["CPUExecutionProvider"])
    rng=np.random.default_rng(0); x=rng.standard_normal((1,1,F)).astype(np.float32); hh0=rng.standard_normal((1,1,Hd)).astype(np.float32); cc0=rng.standard_normal((1,1,Hd)).astype(np.float32)
    a=s_l.run(None,{"x":x,"lengths":np.ones(1,np.int32),"h_in":hh0,"c_in":cc0}); b=s_d.run(None,{"x":x,"h_in":hh0,"c_in":cc0})
    print("max abs difference fused vs unfused (logits, h, c):", [float(np.abs(p-q).max()) for p,q in zip(a,b)])
    bl=sf.BareLoop(s_l,F); bd=sf.BareLoop(s_d,F)
    fns=dict(lstm=lambda: bl.step(x[0]), decomposed=lambda: bd.step(x[0]))
    res={k:[] for k in fns}
    for r in range(15):
        for k,f in fns.items():
            t=time.perf_counter()
            for _ in range(3000): f()
            res[k].append((time.perf_counter()-t)/3000*1e6)
    for k,v in res.items(): print(f"{k:12s} {np.median(v):7.2f} us  [{min(v):.2f}, {max(v):.2f}]")
    print("unfused / fused, median of block ratios:", np.median(np.array(res['decomposed'])/np.array(res['lstm'])))


if __name__ == "__main__":
    main()
