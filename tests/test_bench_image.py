"""`sitrep bench image`: the container image's size, by replaying the build's lines or from Docker itself."""

from __future__ import annotations

import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sitrep.bench.image import run_image, stage_chain
from sitrep.cli import app

PAYLOAD = 300_000  # bytes of the tiny package's module: what its pip layer must at least hold

DOCKERFILE = """\
# a tiny image in the shape of Dockerfile.cpu
FROM python:3.11-slim-bookworm AS base
COPY dist/ /tmp/src/
RUN python -m pip install --no-cache-dir --no-index \\
        /tmp/src/tinypkg-0.1-py3-none-any.whl && rm -rf /tmp/src
RUN useradd --system sitrep
CMD ["python", "-c", "import tinypkg"]

FROM base AS with-model
COPY model/weights.bin model/manifest.json /models/default/
COPY model/tok.mode[l] model/absent.spm[x] /models/default/onnx/
"""


def _context(tmp_path: Path) -> Path:
    """A build context: the Dockerfile, a wheel of a pure-Python package, and a fake bundle."""
    ctx = tmp_path / "ctx"
    (ctx / "dist").mkdir(parents=True)
    (ctx / "model").mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE, encoding="utf-8")
    # the build context: BuildKit reads <Dockerfile>.dockerignore; dist/notes.tmp is left out of it
    (ctx / "Dockerfile.dockerignore").write_text("# test\n**/*.tmp\n", encoding="utf-8")
    (ctx / "dist" / "notes.tmp").write_bytes(b"n" * 50_000)
    info = "tinypkg-0.1.dist-info"
    files = {
        "tinypkg/__init__.py": "# " + "x" * PAYLOAD + "\nVALUE = 1\n",
        f"{info}/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(ctx / "dist" / "tinypkg-0.1-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as whl:
        for name, text in files.items():
            whl.writestr(name, text)
    (ctx / "model" / "weights.bin").write_bytes(os.urandom(250_000))
    (ctx / "model" / "manifest.json").write_text("{}", encoding="utf-8")
    (ctx / "model" / "tok.model").write_bytes(b"t" * 10_000)
    return ctx


def test_stage_chain_follows_from_lines(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    base, lines = stage_chain(ctx / "Dockerfile", "with-model")
    assert base == "python:3.11-slim-bookworm"
    assert [(stage, word) for stage, word, _ in lines] == [
        ("base", "COPY"), ("base", "RUN"), ("base", "RUN"), ("base", "CMD"), ("with-model", "COPY"),
        ("with-model", "COPY")]  # fmt: skip
    assert " ".join(lines[1][2].split()) == (  # continuation lines joined
        "python -m pip install --no-cache-dir --no-index /tmp/src/tinypkg-0.1-py3-none-any.whl && rm -rf /tmp/src")


def test_replay_counts_what_each_line_adds(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    report = run_image(ctx / "Dockerfile", "with-model", ctx, method="replay", log=lambda _: None)
    assert report["method"] == "replay" and report["base_image_mb"] is None
    layers = report["layers"]
    assert [x["line"].split()[0] for x in layers] == ["COPY", "RUN", "RUN", "COPY", "COPY"]
    wheel = (ctx / "dist" / "tinypkg-0.1-py3-none-any.whl").stat().st_size
    assert layers[0]["mb"] == round(wheel / 1e6, 2)  # the COPY layer stays although the RUN removes it
    # (and holds only what the .dockerignore lets into the context: not dist/notes.tmp)
    assert layers[1]["mb"] >= PAYLOAD / 1e6  # the installed module, uncompressed
    assert layers[2]["mb"] is None and not layers[2]["replayed"]  # useradd: not something a replay can run
    assert layers[3]["mb"] == round(250_002 / 1e6, 2)
    assert layers[4]["mb"] == round(10_000 / 1e6, 2)  # the glob that matches nothing adds nothing
    assert report["added_mb"] == round(sum(x["mb"] for x in layers if x["mb"] is not None), 1)
    assert report["largest_packages"][0]["package"] == "tinypkg"  # the venv's own pip is not counted


def test_cli_report_and_one_line_errors(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    out, md = tmp_path / "image.json", tmp_path / "image.md"
    args = ["bench", "image", "--dockerfile", str(ctx / "Dockerfile"), "--context", str(ctx), "--method", "replay"]
    res = CliRunner().invoke(app, [*args, "--target", "base", "--json", str(out), "--markdown", str(md)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["target"] == "base" and len(report["layers"]) == 3
    assert "Added to the base image" in md.read_text(encoding="utf-8") and "not measured" in res.output
    res = CliRunner().invoke(app, [*args, "--target", "nope"])
    assert res.exit_code == 2 and "no stage named 'nope'" in res.output and "Traceback" not in res.output
    (ctx / "model" / "weights.bin").unlink()
    res = CliRunner().invoke(app, [*args, "--target", "with-model"])
    assert res.exit_code == 2 and "COPY model/weights.bin: not in the build context" in res.output
    res = CliRunner().invoke(app, [*args, "--method", "podman"])
    assert res.exit_code == 2 and "--method" in res.output


def test_docker_sizes_where_an_engine_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With `docker` answering, the report is Docker's own: image, base and layer sizes."""
    ctx = _context(tmp_path)
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(f"""#!/bin/bash
echo "$*" >> {calls}
case "$1 $2" in
  "info "*) exit 0 ;;
  "build "*) exit 0 ;;
  "image inspect") [[ "$5" == python:* ]] && echo 150000000 || echo 500000000 ;;
  "history "*) printf '349000000\\tRUN pip install\\n0\\tCMD python\\n1000000\\tCOPY model\\n' ;;
  *) exit 3 ;;
esac
""", encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    report = run_image(ctx / "Dockerfile", "with-model", ctx, method="auto", log=lambda _: None)
    assert report["method"] == "docker"
    assert (report["image_mb"], report["base_image_mb"], report["added_mb"]) == (500.0, 150.0, 350.0)
    assert [x["mb"] for x in report["layers"]] == [349.0, 1.0]
    log = calls.read_text(encoding="utf-8").splitlines()
    assert log[0] == "info" and log[1].startswith(f"build -f {ctx / 'Dockerfile'} --target with-model -t ")
