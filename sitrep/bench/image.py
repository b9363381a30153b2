"""`sitrep bench image`: how large the CPU container image is, layer by layer.

With a Docker engine, the image is built (`docker build --target …`) and Docker's own figures are read
(`docker image inspect`, `docker history`). Without one (this project's 2-core machine), the build's
own lines are replayed as `tests/test_serving_docker.py` replays them: each COPY into a scratch root,
each RUN that calls pip in a fresh virtualenv, and the bytes each line adds are counted as Docker
counts a layer (the files it writes; a later `rm` does not shrink an earlier layer). What a replay
cannot know is the base image (`FROM python:…`), which needs a registry: the report says so instead
of guessing.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MB = 1e6  # Docker reports image sizes in decimal megabytes


class ImageError(RuntimeError):
    """Bad Dockerfile, target or build context; or the build failed."""


@dataclass
class Stage:
    name: str | None
    parent: str  # the FROM reference: an image, or an earlier stage's name
    lines: list[tuple[str, str]]  # (INSTRUCTION, arguments)


def parse_stages(dockerfile: Path) -> list[Stage]:
    """The build stages of a Dockerfile, line continuations joined, comments dropped."""
    logical: list[str] = []
    buf = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        word, _, args = line.strip().partition(" ")
        if word.upper() == "FROM":
            ref, _, name = args.strip().partition(" AS ")
            stages.append(Stage(name.strip() or None, ref.strip(), []))
        elif stages:
            stages[-1].lines.append((word.upper(), args.strip()))
    return stages


def instructions(dockerfile: Path, stage: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of one build stage's own lines."""
    found = [s for s in parse_stages(dockerfile) if s.name == stage]
    if not found:
        raise ImageError(f"{dockerfile}: no stage named {stage!r}")
    return found[0].lines


def stage_chain(dockerfile: Path, target: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(base image, [(stage, INSTRUCTION, arguments), …]): every line the target runs, its parents' first."""
    stages = {s.name: s for s in parse_stages(dockerfile) if s.name}
    if target not in stages:
        known = ", ".join(stages) or "none"
        raise ImageError(f"{dockerfile}: no stage named {target!r} (stages: {known})")
    chain: list[Stage] = []
    stage: Stage | None = stages[target]
    while stage is not None:
        chain.insert(0, stage)
        stage = stages.get(stage.parent)
    return chain[0].parent, [(s.name or "", word, args) for s in chain for word, args in s.lines]


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (symlinks not followed), as a layer stores them."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root) / name
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def context_filter(dockerfile: Path, context: Path) -> Callable[[str], bool]:
    """Whether a path (relative to the build context, '/'-separated) is in the build context: the rules of
    `<Dockerfile>.dockerignore` (what BuildKit reads), else of `.dockerignore` in the context; the last rule
    that matches the path or one of its parent folders decides, `!` re-includes, `**/` matches any depth."""
    ignore = next((p for p in (dockerfile.with_name(dockerfile.name + ".dockerignore"), context / ".dockerignore")
                   if p.is_file()), None)
    rules = [] if ignore is None else [
        (line.startswith("!"), line.removeprefix("!").strip().strip("/"))
        for line in (x.strip() for x in ignore.read_text(encoding="utf-8").splitlines())
        if line and not line.startswith("#")]

    def matches(pattern: str, rel: str) -> bool:
        parts = rel.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        patterns = [pattern, pattern[3:]] if pattern.startswith("**/") else [pattern]
        return any(fnmatch.fnmatchcase(prefix, p) for prefix in prefixes for p in patterns)

    def included(rel: str) -> bool:
        keep = True
        for negated, pattern in rules:
            if matches(pattern, rel):
                keep = negated
        return keep

    return included


def replay_copy(args: str, context: Path, root: Path, included: Callable[[str], bool] = lambda _: True) -> int:
    """Copy a COPY line's sources from the build context into `root` (only what `included` lets into the
    context, see `context_filter`); the bytes it adds."""
    parts = [p for p in shlex.split(args) if not p.startswith("--")]
    *sources, dest = parts
    target = root / dest.lstrip("/")
    added = 0

    def copy(path: Path, dst: Path) -> int:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst)
        return path.stat().st_size

    for src in sources:
        pattern = any(c in src for c in "*?[")
        found = sorted(context.glob(src)) if pattern else [context / src]
        matches = [p for p in found if p.exists() and included(p.relative_to(context).as_posix())]
        if not matches:
            if pattern:
                continue  # a glob that matches nothing copies nothing (Docker accepts it if another source matched)
            why = "excluded from" if found[0].exists() else "not in"
            hint = " (run `make model` first: the with-model target copies the bundle)" if "artifacts" in src else ""
            raise ImageError(f"COPY {src}: {why} the build context {context}{hint}")
        for path in matches:
            if path.is_dir():
                added += sum(copy(f, target / f.relative_to(path)) for f in sorted(path.rglob("*"))
                             if f.is_file() and not f.is_symlink() and included(f.relative_to(context).as_posix()))
            else:
                added += copy(path, target / path.name if dest.endswith("/") or len(parts) > 2 else target)
    return added


def pip_environment() -> dict[str, str]:
    """This machine's pip configuration (index, proxies, wheels), so a replayed install works where tests run."""
    keep = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "SSL_CERT", "REQUESTS_CA_BUNDLE", "LANG", "LC_")
    return {k: v for k, v in os.environ.items() if k.startswith(keep) or k == "TMPDIR"}


def replay_run(args: str, root: Path, venv: Path, home: Path) -> None:
    """Run a RUN line that calls pip, verbatim, in `venv`, with absolute paths mapped into `root`."""
    command = args.replace("/tmp/src", str(root / "tmp" / "src"))
    env = {**pip_environment(), "PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home),
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", command], env=env, capture_output=True, text=True,
                          timeout=1200, cwd=home)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["(no output)"]
        raise ImageError(f"RUN {args[:60]}…: exit {proc.returncode}: {tail[0]}")


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def package_sizes(site: Path) -> dict[str, int]:
    """Bytes of each top-level entry of a site-packages folder (a package and its .libs folder together)."""
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        if entry.name.endswith((".dist-info", ".pth")) or entry.name in ("__pycache__", "_distutils_hack"):
            continue
        key = entry.name.removesuffix(".libs").removesuffix(".py")
        sizes[key] = sizes.get(key, 0) + tree_bytes(entry)
    return sizes


def largest_added(before: dict[str, int], after: dict[str, int], n: int = 8) -> list[dict[str, Any]]:
    """The `n` packages that grew most between two `package_sizes` (what the pip lines installed)."""
    grown = {k: v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
    top = sorted(grown.items(), key=lambda kv: -kv[1])[:n]
    return [{"package": name, "mb": round(b / MB, 1)} for name, b in top]


def measure_replay(dockerfile: Path, target: str, context: Path, work: Path,
                   log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Replay the target's COPY and pip lines; the bytes each adds."""
    base, lines = stage_chain(dockerfile, target)
    included = context_filter(dockerfile, context)
    root, venv, home = work / "root", work / "venv", work / "home"
    for d in (root, home):
        d.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    bare = package_sizes(site_packages(venv))
    layers: list[dict[str, Any]] = []
    for stage, word, args in lines:
        if word == "COPY":
            added = replay_copy(args, context, root, included)
            layers.append({"stage": stage, "line": f"COPY {args}", "mb": round(added / MB, 2), "replayed": True})
        elif word == "RUN" and "pip install" in args:
            log(f"replaying RUN {args[:70]}… in a fresh virtualenv")
            site = site_packages(venv)
            before = tree_bytes(site)
            replay_run(args, root, venv, home)
            layers.append({"stage": stage, "line": f"RUN {args}", "mb": round((tree_bytes(site) - before) / MB, 2),
                           "replayed": True})
        elif word in ("RUN", "ADD"):
            layers.append({"stage": stage, "line": f"{word} {args}", "mb": None, "replayed": False})
    return {
        "method": "replay",
        "base_image": base,
        "base_image_mb": None,
        "base_image_note": "not measured: no Docker engine here, and a base image needs a registry",
        "layers": layers,
        "added_mb": round(sum(x["mb"] for x in layers if x["mb"] is not None), 1),
        "largest_packages": largest_added(bare, package_sizes(site_packages(venv))),
    }


def docker_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        return subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _docker(*args: str, timeout: int = 3600) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ImageError(f"docker {args[0]}: exit {proc.returncode}: {tail[0]}")
    return proc.stdout.strip()


def measure_docker(dockerfile: Path, target: str, context: Path, tag: str,
                   log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Build the target with Docker and read the image's size and its base image's."""
    base, _ = stage_chain(dockerfile, target)
    log(f"docker build -f {dockerfile} --target {target} -t {tag} {context}")
    _docker("build", "-f", str(dockerfile), "--target", target, "-t", tag, str(context))
    size = int(_docker("image", "inspect", "-f", "{{.Size}}", tag, timeout=60))
    base_size = int(_docker("image", "inspect", "-f", "{{.Size}}", base, timeout=60))
    layers = []
    for row in _docker("history", "--no-trunc", "--human=false", "--format", "{{.Size}}\t{{.CreatedBy}}", tag,
                       timeout=60).splitlines():
        nbytes, _, created = row.partition("\t")
        if nbytes.strip().isdigit() and int(nbytes) > 0:
            layers.append({"stage": "", "line": created.strip(), "mb": round(int(nbytes) / MB, 2), "replayed": False})
    return {
        "method": "docker",
        "tag": tag,
        "image_mb": round(size / MB, 1),
        "base_image": base,
        "base_image_mb": round(base_size / MB, 1),
        "layers": layers,
        "added_mb": round((size - base_size) / MB, 1),
    }


def image_markdown(report: dict[str, Any]) -> str:
    lines = [f"`{report['dockerfile']}`, target `{report['target']}`, measured by "
             + ("`docker build` + `docker image inspect`" if report["method"] == "docker"
                else "replaying its COPY and pip lines (no Docker engine)") + ".", ""]
    if report["method"] == "docker":
        lines.append(f"**Image: {report['image_mb']:.1f} MB** (base `{report['base_image']}` "
                     f"{report['base_image_mb']:.1f} MB + {report['added_mb']:.1f} MB added).")
    else:
        lines.append(f"**Added to the base image: {report['added_mb']:.1f} MB**; base `{report['base_image']}`: "
                     f"{report['base_image_note']}.")
    lines += ["", "| layer | MB |", "|---|---:|"]
    for layer in report["layers"]:
        text = layer["line"] if len(layer["line"]) <= 90 else layer["line"][:87] + "…"
        size = "not replayed" if layer["mb"] is None else f"{layer['mb']:.2f}"
        lines.append(f"| `{text.replace('|', '/')}` | {size} |")
    if report.get("largest_packages"):
        lines += ["", "Largest installed packages: " + ", ".join(
            f"{p['package']} {p['mb']:.1f} MB" for p in report["largest_packages"]) + "."]
    return "\n".join(lines) + "\n"


def run_image(dockerfile: Path, target: str, context: Path, method: str = "auto",
              log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Measure one Dockerfile target: with Docker where it runs (`method` auto or docker), else by replay."""
    import tempfile

    if not dockerfile.is_file():
        raise ImageError(f"{dockerfile}: no such Dockerfile")
    if not context.is_dir():
        raise ImageError(f"{context}: the build context must be a folder")
    stage_chain(dockerfile, target)  # a bad target fails before any work
    use_docker = method != "replay" and docker_available()
    if method == "docker" and not use_docker:
        raise ImageError("--method docker: no Docker engine answers `docker info` here")
    if use_docker:
        report = measure_docker(dockerfile, target, context, f"sitrep-bench-image:{target}", log)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = measure_replay(dockerfile, target, context, Path(tmp), log)
    return {"dockerfile": str(dockerfile), "target": target, **report}
