"""Runs inside the guest (and on x86): run each model of a probe job under several onnxruntime
session configurations and save every output (probe models expose intermediate tensors as graph
outputs). numpy + onnxruntime only.

Usage: python probe_guest.py JOB.json OUT_DIR
JOB.json: {"models": [{"name", "model", "inputs"}], "configs": {"label": {"opt": "all"|"none",
"config": {"key": "value"}}}}
"""
import json
import os
import sys

import numpy as np
import onnxruntime as ort


def main() -> int:
    job_path, out = sys.argv[1], sys.argv[2]
    job = json.loads(open(job_path).read())
    base = os.path.dirname(os.path.abspath(job_path))
    for m in job["models"]:
        feeds = dict(np.load(os.path.join(base, m["inputs"])))
        for label, cfg in job["configs"].items():
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            so.log_severity_level = 3
            if cfg.get("opt") == "none":
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            for k, v in cfg.get("config", {}).items():
                so.add_session_config_entry(k, v)
            try:
                sess = ort.InferenceSession(os.path.join(base, m["model"]), so, providers=["CPUExecutionProvider"])
                names = [o.name for o in sess.get_outputs()]
                res = dict(zip(names, sess.run(None, feeds)))
                err = ""
            except Exception as e:  # recorded, the host reports it
                res, err = {}, f"{type(e).__name__}: {e}"
            np.savez(os.path.join(out, f"{m['name']}__{label}.npz"), **res)
            print("PROBE_JSON " + json.dumps({"model": m["name"], "config": label, "error": err}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
