"""`sitrep eval-crosslingual` on the tiny model: two trainings (en only, all), per-language gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sitrep.cli import app
from sitrep.models.bundle import load_bundle
from sitrep.models.corpus import read_examples
from sitrep.training.crosslingual import CrosslingualError, run_crosslingual
from tests.conftest import tiny_config


def _toml(values: dict) -> str:
    def v(x: object) -> str:
        if isinstance(x, bool):
            return "true" if x else "false"
        if isinstance(x, dict):
            return "{ " + ", ".join(f"{k} = {v(y)}" for k, y in x.items()) + " }"
        return json.dumps(x) if isinstance(x, str) else str(x)

    return "".join(f"{k} = {v(x)}\n" for k, x in values.items() if x is not None)


@pytest.fixture(scope="module")
def xl(tiny_base: Path, tiny_data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("xl")
    cfg = tiny_config(tiny_base, tiny_data, epochs=1, max_steps=4, patience=1)
    files = {"test": tiny_data["test"], "zeroshot": tiny_data["zeroshot"]}
    result = run_crosslingual(out, config=cfg, eval_files=files, progress=False, log=lambda *_: None)
    return {"out": out, "cfg": cfg, "result": result}


def test_trains_en_only_and_all(xl: dict, tiny_data: dict[str, Path]) -> None:
    out = xl["out"]
    en = load_bundle(out / "en-only", verify=False).manifest.training
    al = load_bundle(out / "all", verify=False).manifest.training
    assert en["train_langs"] == ["en"] and en["n_dev"] < al["n_dev"]
    assert al["train_langs"] == sorted({e.lang for e in read_examples(tiny_data["train"])})


def test_per_language_scores_and_gap(xl: dict, tiny_data: dict[str, Path]) -> None:
    result = json.loads((xl["out"] / "crosslingual.json").read_text(encoding="utf-8"))
    rows = result["per_language"]
    test_langs = {e.lang for e in read_examples(tiny_data["test"])}
    zs_langs = {e.lang for e in read_examples(tiny_data["zeroshot"])}
    assert {r["lang"] for r in rows if r["split"] == "test"} == test_langs
    assert {r["lang"] for r in rows if r["split"] == "zeroshot"} == zs_langs
    for r in rows:
        assert r["transfer_gap"] == pytest.approx(r["en-only"] - r["all"], abs=1e-4)
        assert r["role_en_only"] == ("source" if r["lang"] == "en" else "zero-shot")
        assert r["role_all"] == ("trained" if r["lang"] in test_langs else "zero-shot")
    en = next(r for r in rows if r["lang"] == "en" and r["split"] == "test")
    assert en["drop_from_source"]["en-only"] == 0.0
    targets = [r["transfer_gap"] for r in rows if r["split"] == "test" and r["lang"] != "en"]
    assert result["summary"]["mean_transfer_gap_trained_targets"] == pytest.approx(
        sum(targets) / len(targets), abs=1e-4
    )
    for split in ("test", "zeroshot"):
        o = result["overall"][split]
        assert o["transfer_gap"] == pytest.approx(o["en-only"] - o["all"], abs=1e-4)
    md = (xl["out"] / "crosslingual.md").read_text(encoding="utf-8")
    assert "transfer gap" in md and all(f"| {lang} |" in md for lang in test_langs | zs_langs)


def test_cli_reuses_bundles_and_refuses_wrong_ones(
    xl: dict, tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    cfg = xl["cfg"].to_json()
    config = tmp_path / "tiny.toml"
    config.write_text(_toml(cfg), encoding="utf-8")
    before = (xl["out"] / "all" / "manifest.json").stat().st_mtime_ns
    res = CliRunner().invoke(app, ["eval-crosslingual", "--out", str(xl["out"]), "--config", str(config),
                                   "--test", str(tiny_data["test"]), "--zeroshot", str(tiny_data["zeroshot"]),
                                   "--quiet"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "reusing" in res.output and "transfer gap" in res.output
    assert (xl["out"] / "all" / "manifest.json").stat().st_mtime_ns == before  # not retrained
    # A bundle trained on other languages under the wrong name is refused, not silently reused.
    with pytest.raises(CrosslingualError, match="pass --force"):
        run_crosslingual(xl["out"], config=xl["cfg"], source_lang="ar", progress=False, log=lambda *_: None,
                         eval_files={"test": tiny_data["test"]})  # fmt: skip
