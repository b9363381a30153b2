"""The container recipes: hadolint, and Dockerfile.cpu's own COPY + pip lines in a fresh venv give a server.

No Docker engine runs here, so the test replays what the image build does: the `base` stage's COPY lines
(into a scratch root) and its RUN lines that call pip (verbatim, with /tmp/src mapped into that root),
in a new virtualenv. The result must serve /classify from the tiny bundle without torch installed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sitrep.bench.image import context_filter, instructions, replay_copy, replay_run
from sitrep.serving.process import ServerProcess

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = ("Dockerfile.cpu", "Dockerfile.gpu")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(REPO / name)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_basics(name: str) -> None:
    text = (REPO / name).read_text(encoding="utf-8")
    assert re.search(r"^USER 10001$", text, re.M), "must not run as root"
    assert "HEALTHCHECK" in text and "/readyz" in text
    assert 'CMD ["python", "-m", "sitrep.serving"]' in text
    assert "torch" not in text.replace("no torch", "").replace("No torch", "")
    extra = "serve" if name.endswith("cpu") else "gpu"
    assert f'"/tmp/src[{extra}]"' in text


def test_cpu_image_install_serves_without_torch(tiny_bundle: Path, tmp_path: Path) -> None:
    steps = instructions(REPO / "Dockerfile.cpu", "base")
    root = tmp_path / "image"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin"}
    included = context_filter(REPO / "Dockerfile.cpu", REPO)  # what the .dockerignore lets into the context
    ran = 0
    for word, args in steps:
        if word == "COPY":
            replay_copy(args, REPO, root, included)
        elif word == "RUN" and "pip install" in args:
            replay_run(args, root, venv, tmp_path)  # raises ImageError with pip's last line if it fails
            ran += 1
    assert ran == 1
    assert not (root / "tmp" / "src").exists()  # the image keeps only the installed package
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.lower()
    assert "onnxruntime==" in installed and "fastapi==" in installed
    for heavy in ("torch", "transformers", "ray", "pyarrow", "scikit-learn", "matplotlib"):
        assert f"\n{heavy}==" not in "\n" + installed, f"{heavy} is installed by the serve extras"
    workdir = tmp_path / "srv"  # like WORKDIR /srv: run the installed package, not a source tree
    workdir.mkdir()
    server_env = {"SITREP_BUNDLE": str(tiny_bundle), "SITREP_THREADS": "1", "PATH": env["PATH"]}
    with ServerProcess(server_env, startup_timeout_s=120, python=str(python), cwd=workdir) as server:
        r = httpx.post(
            server.url + "/classify", json={"items": [{"id": "a", "text": "The group said it hit the base."}]}
        )
        log = server.log()
    assert r.status_code == 200, log[-3000:]
    assert r.json()["results"][0]["id"] == "a"
    assert (
        str(venv)
        in subprocess.run(
            [str(python), "-c", "import sitrep.serving; print(sitrep.serving.__file__)"],
            capture_output=True,
            text=True,
            cwd=workdir,
            check=True,
        ).stdout
    )


def test_cpu_image_with_model_copies_what_the_int8_runtime_reads(tiny_bundle: Path) -> None:
    """The `with-model` stage copies the manifest and every file `runtime_files` names for onnx-int8
    (the SentencePiece tokenizer included when the bundle has one), each to its place in the bundle."""
    from fnmatch import fnmatch

    from sitrep.models.bundle import MANIFEST, SPM_FILE, load_bundle
    from sitrep.models.runtime import runtime_files

    bundle = load_bundle(tiny_bundle)
    assert bundle.spm_file is not None  # the tiny bundle is exported like the default one
    prefix = "artifacts/models/default/"
    copied: set[str] = set()
    for word, args in instructions(REPO / "Dockerfile.cpu", "with-model"):
        if word != "COPY":
            continue
        *sources, dest = [p for p in shlex.split(args) if not p.startswith("--")]
        for src in sources:
            assert src.startswith(prefix), src
            rel = src.removeprefix(prefix)
            target = dest.removeprefix("/models/default/")
            placed = (target + Path(rel).name) if dest.endswith("/") else target
            # a glob source lands where its matches would: check the bundle's files against it
            matches = [f for f in [MANIFEST, *bundle.manifest.files] if fnmatch(f, rel)]
            assert matches, f"COPY {src}: matches no bundle file"
            for f in matches:
                assert f in (placed, target + Path(f).name), f"COPY {src} -> {dest}: {f} would land elsewhere"
                copied.add(f)
    needed = {MANIFEST, *runtime_files("onnx-int8", bundle)}
    assert SPM_FILE in needed
    assert needed <= copied, f"missing from the image: {sorted(needed - copied)}"
    # and the build context holds them: Dockerfile.cpu.dockerignore must let each one in
    included = context_filter(REPO / "Dockerfile.cpu", REPO)
    shut_out = sorted(f for f in needed if not included(prefix + f))
    assert not shut_out, f"excluded from the build context by Dockerfile.cpu.dockerignore: {shut_out}"
