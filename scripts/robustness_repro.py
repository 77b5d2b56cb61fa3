"""Issue 18's list of bad inputs and faults, re-run from the CLI: per command, its exit code, seconds and
first line of output (an ``error:`` or warning line when there is one). Writes the rows as JSON.

    .venv/bin/python scripts/robustness_repro.py [OUT.json]      # about 3 minutes on 2 CPU cores
"""
import json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W = Path(tempfile.mkdtemp(prefix="datadiet-repro-"))
D = [str(ROOT / ".venv/bin/datadiet")]
C = str(ROOT / "configs/tiny.yaml")
B = ["model.name=tiny-bert", "data.max_train=200", "data.max_test=100", "train.threads=1"]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", DATADIET_CACHE=str(W / "cache"), TOKENIZERS_PARALLELISM="false")
rows = []


def first(out: str) -> str:
    lines = [l for l in out.splitlines() if l.strip()]
    for l in lines:
        if l.startswith("error:") or " W " in l[:12] or l.startswith("W ") or "Traceback" in l:
            return l
    return lines[0] if lines else ""


def run(item, label, args, env=None, bg=False):
    t0 = time.perf_counter()
    p = subprocess.run(D + args, cwd=W, env=env or ENV, capture_output=True, text=True)
    rows.append((item, label, p.returncode, round(time.perf_counter() - t0, 1), first(p.stderr + "\n" + p.stdout)[:260]))
    print(rows[-1], flush=True)
    return p


import pandas as pd
rng = __import__("numpy").random.default_rng(0)
words = "good bad film plot actor scene story music cast ending fine dull".split()
texts = [" ".join(rng.choice(words, 6)) + f" {i}" for i in range(300)]
pd.DataFrame({"text": texts, "label": ["pos" if i % 2 else "neg" for i in range(300)]}).to_csv(W / "ok.csv", index=False)
tt = [" ".join(rng.choice(words, 6)) + f" t{i}" for i in range(40)]  # test texts, none in training
pd.DataFrame({"text": tt, "label": ["yes" if i % 2 else "no" for i in range(40)]}).to_csv(W / "disjoint.csv", index=False)
pd.DataFrame({"text": tt, "label": (["pos", "neg", "meh"] * 14)[:40]}).to_csv(W / "unseen.csv", index=False)
pd.DataFrame({"text": tt, "y": ["pos"] * 40}).to_csv(W / "nolabel.csv", index=False)
pd.DataFrame({"text": tt, "label": ["fresh" if i % 2 else "rotten" for i in range(40)]}).to_csv(W / "rt.csv", index=False)
pd.DataFrame({"text": [""] * 20, "label": ["pos", "neg"] * 10}).to_csv(W / "empty.csv", index=False)
(W / "lists.jsonl").write_text("".join(json.dumps({"text": t, "label": ["a", "b"]}) + "\n" for t in texts[:20]))
(W / "corrupt.parquet").write_text("not parquet at all")
pd.DataFrame({"text": texts[:20] * 2, "label": ["pos"] * 20 + ["neg"] * 20}).to_csv(W / "conflict.csv", index=False)
(W / "list.yaml").write_text("- a\n- b\n"); (W / "bin.yaml").write_bytes(bytes(range(256))); (W / "adir").mkdir()
(W / "afile").write_text("x")
(W / "suite_list.yaml").write_text("- just\n- a list\n")
(W / "suite_str.yaml").write_text("name: s\nbase: {}\ndatasets: [{name: rotten_tomatoes}]\nmethods: full\nseeds: [0]\n")

# 1. concurrent runs into one folder; two bench into one --out
args1 = ["train", "-q", "-c", C, "--out", str(W / "runs"), "--set", *B, "run_name=conc"]
procs = [subprocess.Popen(D + args1 + [f"train.seed={s}"], cwd=W, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (11, 22)]
for s, p in zip((11, 22), procs):
    o, e = p.communicate(); rows.append((1, f"concurrent train seed {s}", p.returncode, None, first(e + "\n" + o)[:260])); print(rows[-1])
procs = [subprocess.Popen(D + ["bench", "-q", "--suite", "smoke", "--out", str(W / "bench")], cwd=W, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
for i, p in enumerate(procs):
    o, e = p.communicate(); rows.append((1, f"concurrent bench {i}", p.returncode, None, first(e + "\n" + o)[:260])); print(rows[-1])
lines = (W / "bench" / "results.jsonl").read_text().splitlines()
rows.append((1, "bench results.jsonl lines / distinct cells", 0, None, f"{len(lines)} / {len({json.loads(l)['cell'] if 'cell' in json.loads(l) else l for l in lines})}")); print(rows[-1])

# 2. a model folder with its own modeling code
sys.path.insert(0, str(ROOT / "src"))
from datadiet.models.tiny import tiny_model
m, tok = tiny_model("tiny-bert", num_labels=2, seed=0)
evil = W / "evil"; m.save_pretrained(evil); tok.save_pretrained(evil)
cfg = json.loads((evil / "config.json").read_text())
cfg["auto_map"] = {"AutoModelForSequenceClassification": "modeling_evil.Evil", "AutoConfig": "modeling_evil.EvilConfig"}
(evil / "config.json").write_text(json.dumps(cfg))
(evil / "modeling_evil.py").write_text(f"open({str(W / 'RAN')!r}, 'w').write('x')\nfrom transformers import BertConfig as EvilConfig, BertForSequenceClassification as Evil\n")
run(2, "model folder with modeling_*.py", ["train", "-q", "-c", C, "--out", str(W / "runs"), "--set", *B, f"model.name={evil}"])
rows.append((2, "its code ran?", 0, None, str((W / "RAN").exists()))); print(rows[-1])
cfg["model_type"] = "evil-bert"  # a type transformers does not know: only the folder's own code could load it
(evil / "config.json").write_text(json.dumps(cfg))
run(2, "model folder that needs its modeling_*.py", ["train", "-q", "-c", C, "--out", str(W / "runs"), "--set", *B, f"model.name={evil}", "run_name=evil2"])
rows.append((2, "its code ran?", 0, None, str((W / "RAN").exists()))); print(rows[-1])

t = ["train", "-q", "-c", C, "--out", str(W / "runs"), "--set", *B]
# 3.
run(3, "label_column=lable, causal model", t + ["data.name=ok.csv", "data.label_column=lable", "model.name=tiny-gpt2"])
run(3, "label_column=lable, tiny-bert", t + ["data.name=ok.csv", "data.label_column=lable"])
# 4.
run(4, "test_file with disjoint labels", t + ["data.name=ok.csv", "data.test_file=disjoint.csv"])
run(4, "test_file with an unseen class", t + ["data.name=ok.csv", "data.test_file=unseen.csv", "run_name=unseen"])
run(4, "built-in + test_file (honoured)", t + ["data.test_file=rt.csv", "run_name=builtin_tf"])
# 5.
run(5, "overwrite=\"false\"", t + ['overwrite="false"'])
for kv in ["data.test_size=1.5", "train.bf16=maybe", "data.test_size=abc", "data.split_seed=-1", "run_name=5", "output_dir=123"]:
    run(5, kv, t + [kv])
# 6. selection files
run(6, "select (a good file to damage)", ["select", "-q", "-c", C, "--set", *B, "-p", "mode=random", "keep=0.5", "--out", str(W / "sel.json")])
sel = json.loads((W / "sel.json").read_text())
for name, change in {"dup": lambda d: d.update(ids=d["ids"][:10] * 10, indices=d["indices"][:10] * 10, n_selected=100),
                     "float": lambda d: d.update(ids=[i + 0.7 for i in d["ids"]]),
                     "empty": lambda d: d.update(ids=[], indices=[], n_selected=0),
                     "noids": lambda d: d.pop("ids"),
                     "ntotal": lambda d: d.update(n_total="lots")}.items():
    d = json.loads(json.dumps(sel)); change(d); (W / f"sel_{name}.json").write_text(json.dumps(d))
    run(6, f"selection file: {name}", t + [f"data.selection=sel_{name}.json"])
run(8, "score (a good scores file)", ["score", "-q", "-c", C, "--set", *B, "--seeds", "1", "--score-steps", "2", "--out", str(W / "scores.json")])
sc = json.loads((W / "scores.json").read_text())
d = json.loads(json.dumps(sc)); d["ids"] = d["ids"][:100] * 2; (W / "scores_dup.json").write_text(json.dumps(d))
run(6, "select --scores with duplicate ids", ["select", "-q", "--scores", "scores_dup.json", "-p", "mode=top", "keep=0.5", "--out", "x.json"])
# 7. --overwrite keeps the old run
ow = t + ["method.name=data_diet", "method.params.score_seeds=1", "method.params.score_steps=2", "method.params.keep=0.5", "run_name=ow", "data.max_train=100"]
run(7, "first run (data_diet)", ow)
run(7, "--overwrite", ow + ["method.params.keep=0.3", "--overwrite"])
bk = sorted(p.name for p in (W / "runs" / "ow").glob("backup*/*"))
rows.append((7, "files in backup.*/", 0, None, ", ".join(bk))); print(rows[-1])
# 8. a cache entry whose arrays do not match its ids
import numpy as np
for f in (W / "cache" / "scores").glob("*.npz"):
    z = dict(np.load(f, allow_pickle=False)); key = [k for k in z if k != "ids" and z[k].ndim >= 1 and len(z[k]) == len(z["ids"])]
    for k in key: z[k] = z[k][:10]
    np.savez(f, **z)
p = run(8, "score with damaged cache entries", ["score", "-q", "-c", C, "--set", *B, "--seeds", "1", "--score-steps", "2", "--out", str(W / "scores2.json")])
rows.append((8, "scores2.json ids / scores", 0, None, f"{len(json.loads((W / 'scores2.json').read_text())['ids'])} / {len(json.loads((W / 'scores2.json').read_text())['scores'])}")); print(rows[-1])
# 9.
run(9, "all-empty text column", t + ["data.name=empty.csv"])
run(9, "list-valued labels", t + ["data.name=lists.jsonl"])
run(9, "corrupt parquet", t + ["data.name=corrupt.parquet"])
run(9, "config file: YAML list", ["train", "-q", "-c", "list.yaml"])
run(9, "config file: binary", ["train", "-q", "-c", "bin.yaml"])
run(9, "config file: a directory", ["train", "-q", "-c", "adir"])
import torch
pk = W / "picklemodel"; m.save_pretrained(pk); tok.save_pretrained(pk)
for f in pk.glob("*.safetensors"): f.unlink()
class Boom:
    def __reduce__(self): return (os.system, (f"touch {W / 'PICKLE_RAN'}",))
torch.save({"boom": Boom(), **m.state_dict()}, pk / "pytorch_model.bin")
run(9, "pytorch_model.bin holding a pickle", t + [f"model.name={pk}"])
rows.append((9, "pickle's code ran?", 0, None, str((W / "PICKLE_RAN").exists()))); print(rows[-1])
torch.save({"arch": {"vocab": 75}, "state_dict": {}}, W / "learner_bad.pt")
run(9, "IGF learner of a foreign layout", t + ["method.name=igf", "method.params.learner=learner_bad.pt", "model.name=tiny-gpt2", "data.name=ok.csv", "data.task=causal_lm", "data.context_length=12", "train.max_steps=2"])
d = json.loads(json.dumps(sc)); d["scores"] = d["scores"][:10]; (W / "scores_short.json").write_text(json.dumps(d))
run(9, "select --scores with 10 scores for 200 ids", ["select", "-q", "--scores", "scores_short.json", "-p", "mode=top", "keep=0.5", "--out", "y.json"])
d = json.loads(json.dumps(sc)); d["scores"] = [None] * len(d["scores"]); (W / "scores_null.json").write_text(json.dumps(d))
run(9, "report --scores with null scores", ["report", "-q", "--scores", "scores_null.json", "-c", C])
run(9, "select --out a directory", ["select", "-q", "--scores", "scores.json", "-p", "mode=top", "keep=0.5", "--out", "adir"])
rows.append((9, ".tmp left in adir's parent?", 0, None, str(any(p.name.endswith(".tmp") for p in W.iterdir())))); print(rows[-1])
run(9, "train --out a file", ["train", "-q", "-c", C, "--set", *B, "--out", "afile"])
run(9, "DATADIET_CACHE at a file", ["score", "-q", "-c", C, "--set", *B, "--seeds", "1", "--score-steps", "2", "--out", "s3.json"], env=dict(ENV, DATADIET_CACHE=str(W / "afile")))
# 10.
run(10, "conflicting labels", t + ["data.name=conflict.csv"])
run(10, "test file without the label column", t + ["data.name=ok.csv", "data.test_file=nolabel.csv"])
run(10, "suite file that is a YAML list", ["bench", "-q", "--suite", "suite_list.yaml", "--out", "b1"])
run(10, "suite methods: full (a string)", ["bench", "-q", "--suite", "suite_str.yaml", "--out", "b2"])
# 11. offline hub names, HF_HUB_OFFLINE unset, no network
off = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
run(11, "model.name=nosuchorg/nosuchmodel (no network)", t + ["model.name=nosuchorg/nosuchmodel"], env=off)
run(11, "data.name=nosuchorg/nosuchdata (no network)", t + ["data.name=nosuchorg/nosuchdata"], env=off)

Path(sys.argv[1] if len(sys.argv) > 1 else W / "repro.json").write_text(json.dumps(rows, indent=1))
shutil.rmtree(W / "cache", ignore_errors=True)
