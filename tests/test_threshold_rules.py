"""Threshold rules: the `calibrated` cut, the held-out comparison (`rules_cv`) and `sitrep thresholds`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sitrep.cli import app
from tests.conftest import DATA, tiny_config


def test_calibrated_rule_cuts_at_even_odds_and_unknown_rules_are_refused(tmp_path: Path) -> None:
    from sitrep.models.labels import LABELS
    from sitrep.models.scores import best_f1_threshold
    from sitrep.training.calibrate import fit_thresholds
    from sitrep.training.config import TrainConfig

    rng = np.random.default_rng(0)
    probs = rng.random((200, len(LABELS)))
    y = (probs + 0.3 * rng.standard_normal(probs.shape) > 0.6).astype(np.int64)
    assert fit_thresholds(probs, y, "calibrated") == dict.fromkeys(LABELS, 0.5)
    assert fit_thresholds(probs, y, "f1")["claim"] == round(best_f1_threshold(probs[:, 0], y[:, 0]), 4) != 0.5
    with pytest.raises(ValueError, match="threshold rule"):
        fit_thresholds(probs, y, "bogus")
    with pytest.raises(ValueError, match="threshold_rule"):
        TrainConfig.load(None, {"threshold_rule": "bogus"})
    result = CliRunner().invoke(app, ["train", "--threshold-rule", "bogus", "-o", str(tmp_path / "b")])
    assert result.exit_code == 2 and "threshold_rule" in result.output and "Traceback" not in result.output


def test_rules_cv_scores_only_articles_it_did_not_fit_on() -> None:
    from sitrep.models.scores import tuned_macro_f1
    from sitrep.training.calibrate import rules_cv

    rng = np.random.default_rng(1)
    groups = [f"a{i // 10}" for i in range(400)]
    # Separable: every rule is perfect on held-out articles, and no split tells them apart.
    y = rng.integers(0, 2, (400, 4))
    logits = np.where(y == 1, 3.0, -3.0) + 0.1 * rng.standard_normal(y.shape)
    sep = rules_cv(logits, y, groups, splits=5)
    assert sep["groups"] == 40 and sep["held_out_groups"] == 20 and sep["n"] == 400
    assert all(r["macro_f1"] == 1.0 for r in sep["rules"].values())
    assert sep["paired"]["calibrated"] == {"mean_delta": 0.0, "wins": 0, "losses": 0}
    # Noise: labels unrelated to the logits. Scored on the sentences it was fitted on, the F1-maximising
    # threshold finds a chance peak; on held-out articles it cannot.
    y = (rng.random((400, 4)) < 0.3).astype(np.int64)
    logits = rng.standard_normal((400, 4))
    noise = rules_cv(logits, y, groups, rules=("f1",), splits=20)
    assert noise["rules"]["f1"]["macro_f1"] < tuned_macro_f1(1 / (1 + np.exp(-logits)), y) - 0.02
    with pytest.raises(ValueError, match="two groups"):
        rules_cv(logits, y, ["one"] * 400)


def test_rules_cv_scores_each_language_on_its_held_out_sentences() -> None:
    from sitrep.training.calibrate import rules_cv

    rng = np.random.default_rng(2)
    groups = [f"a{i // 10}" for i in range(400)]
    langs = ["kmr" if i < 200 else "en" for i in range(400)]  # whole articles in one language each
    y = rng.integers(0, 2, (400, 4))
    # Separable in English, noise in Kurmanji: the per-language figures must tell them apart.
    logits = np.where(y == 1, 3.0, -3.0)
    logits[:200] = rng.standard_normal((200, 4))
    out = rules_cv(logits, y, groups, rules=("calibrated",), splits=10, langs=langs)
    per = out["rules"]["calibrated"]["per_language"]
    assert set(per) == {"en", "kmr"}
    assert all(1 <= v["splits"] <= 10 for v in per.values())
    assert per["kmr"]["macro_f1"] < 0.75 < per["en"]["macro_f1"]
    assert "per_language" not in rules_cv(logits, y, groups, rules=("calibrated",), splits=2)["rules"]["calibrated"]
    from sitrep.training.threshold_rules import render_markdown

    table = render_markdown({"bundle": "b", "data": "d", "runtime": "torch", "seed": 0, "bundle_rule": "calibrated",
                             "bundle_thresholds": [0.5] * 4, **out})
    row = next(line for line in table.splitlines() if line.startswith("| `calibrated` |") and line.count("|") == 4)
    assert row == f"| `calibrated` | {per['en']['macro_f1']:.3f} | {per['kmr']['macro_f1']:.3f} |"


def test_training_with_the_calibrated_rule_records_it(tiny_base: Path, tiny_data: dict, tmp_path: Path) -> None:
    from sitrep.models.bundle import load_bundle
    from sitrep.training.train import train

    out = train(tiny_config(tiny_base, tiny_data, max_steps=2, threshold_rule="calibrated"), tmp_path / "b",
                progress=False)
    manifest = load_bundle(out).manifest
    assert manifest.thresholds == {"claim": 0.5, "official_confirmation": 0.5, "casualty": 0.5, "retaliation": 0.5}
    assert manifest.training["config"]["threshold_rule"] == "calibrated"


def test_thresholds_command_compares_the_rules_on_held_out_articles(tiny_bundle: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (DATA / "articles" / "dev.jsonl").read_text().splitlines()[:120]]
    data = tmp_path / "articles.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    out = tmp_path / "report" / "thr"
    result = CliRunner().invoke(app, ["thresholds", str(tiny_bundle), "-d", str(data), "--splits", "4",
                                      "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["rules"]) == {"f1", "calibrated"} and report["splits"] == 4
    assert report["groups"] == len({r["article_id"] for r in rows}) and report["bundle_rule"] == "f1"
    assert "| `calibrated` |" in out.with_suffix(".md").read_text() and "| `calibrated` |" in result.output
    assert len(report["per_split"]["f1"]) == 4 and out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert abs(report["rules"]["f1"]["macro_f1"] - sum(report["per_split"]["f1"]) / 4) < 1e-3

    missing = CliRunner().invoke(app, ["thresholds", str(tiny_bundle), "-d", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "no such file" in missing.output and "Traceback" not in missing.output
