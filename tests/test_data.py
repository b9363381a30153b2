"""The corpus passes its own validator; the validator catches what it promises to catch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sitrep.training.validate_data import Targets, validate

DATA = Path(__file__).resolve().parent.parent / "data"


def test_corpus_passes_the_validator() -> None:
    report = validate(DATA)
    assert report.ok, "\n".join(report.errors[:30])
    langs = {e["lang"]: e for e in report.table}
    assert {"en", "ar", "fa", "fr", "tr", "ur", "ru", "de", "es", "ckb"} <= set(langs)


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(DATA, d, ignore=shutil.ignore_patterns("parts", "README.md"))
    return d


def _append(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _first(path: Path, lang: str) -> dict:
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["lang"] == lang:
            return row
    raise AssertionError(lang)


def test_validator_catches_each_kind_of_error(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    train, test = d / "train.jsonl", d / "test.jsonl"
    fa = _first(train, "fa")
    en = _first(train, "en")
    _append(train, {**fa, "id": "bad-script", "text": fa["text"].replace("ی", "ي") + " يك"})
    _append(train, {**en, "id": "bad-label", "text": "A brand new sentence about nothing at all.",
                    "labels": ["rumour"]})
    _append(train, {**en, "id": "bad-topic", "text": "Another distinct sentence for the topic check.",
                    "topic": "atlantis-war"})
    _append(test, {**en, "id": "leak", "text": en["text"] + " Officials said."})  # train topic in test
    _append(test, {**en, "id": en["id"], "text": "Completely different words here, none shared."})
    (d / "dev.jsonl").open("a").write("{not json\n")
    report = validate(d, Targets(min_per_train_lang=0, min_per_zeroshot_lang=0, background=(0, 1),
                                 min_label_share=0, min_multi_share=0, min_topics=0))
    text = "\n".join(report.errors)
    assert "Arabic yeh" in text and "Arabic kaf" in text
    assert "unknown labels ['rumour']" in text
    assert "'atlantis-war' is not in topics.json" in text
    assert "leakage" in text
    assert "near-duplicate across splits" in text
    assert f"duplicate id {en['id']!r}" in text
    assert "invalid JSON" in text


def test_script_exception_allows_a_deliberate_arabic_letter(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    fa = _first(d / "train.jsonl", "fa")
    row = {**fa, "id": "quoted", "text": "روزنامه عربی نوشت «الجيش» و سپس گزارش داد که حمله رخ داده است",
           "script_exception": "quotes an Arabic word"}
    _append(d / "train.jsonl", row)
    report = validate(d)
    assert not [e for e in report.errors if "quoted" in e or "Arabic yeh" in e]


def test_balance_targets_are_enforced(tmp_path: Path) -> None:
    report = validate(_copy(tmp_path), Targets(min_per_train_lang=10**6))
    assert any("target at least 1000000" in e for e in report.errors)


@pytest.mark.parametrize("split", ["test", "zeroshot"])
def test_tfidf_baseline_trains_and_predicts(tmp_path: Path, tiny_data: dict, split: str) -> None:
    from sitrep.models.tfidf import load_tfidf
    from sitrep.training.tfidf import train_tfidf

    model = train_tfidf(tmp_path / "tfidf", str(tiny_data["train"]), str(tiny_data["dev"]),
                        eval_files={split: str(tiny_data[split])})
    loaded = load_tfidf(tmp_path / "tfidf")
    probs, labels = loaded.predict(["The group claimed the drone attack on the base in a statement."])
    assert probs.shape == (1, 4) and isinstance(labels[0], list)
    assert set(model.meta["scores"]) == {"dev", split}
    assert 0.0 <= model.meta["scores"][split]["macro_f1"] <= 1.0


def test_articles_point_into_their_text_and_keep_their_own_topics(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    art_train = d / "articles" / "train.jsonl"
    rows = [json.loads(x) for x in art_train.read_text(encoding="utf-8").splitlines()]
    rows[0] = {**rows[0], "start": rows[0]["start"] + 1}
    art_train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    en = _first(d / "train.jsonl", "en")
    _append(d / "train.jsonl", {**en, "id": "art-topic", "text": "A sentence that borrows an article topic here.",
                                "topic": rows[5]["topic"]})
    report = validate(d)
    text = "\n".join(report.errors)
    assert f"text is not article[{rows[0]['start']}:" in text
    assert "the two corpora share no topic" in text


def test_import_articles_add_joins_a_batch_and_refuses_it_twice(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sitrep.cli import app

    d = _copy(tmp_path)
    before = {s: (d / "articles" / f"{s}.jsonl").read_text(encoding="utf-8") for s in ("train", "dev", "test")}
    topic = next(t for t, v in json.loads((d / "topics.json").read_text())["topics"].items()
                 if v.get("corpus") == "articles" and v["split"] == "train")
    batch = tmp_path / "batch.jsonl"
    _append(batch, {"article_id": "en-new-001", "lang": "en", "topic": topic, "paragraphs": [
        [{"text": "Rockets hit a base overnight, officials said.", "labels": ["official_confirmation"]}],
        [{"text": "The base has hosted foreign troops since 2014.", "labels": []},
         {"text": "No group has claimed the attack.", "labels": []}]]})
    runner = CliRunner()
    result = runner.invoke(app, ["data", "import-articles", "--add", str(batch), "--data-dir", str(d)])
    assert result.exit_code == 0, result.output
    train = (d / "articles" / "train.jsonl").read_text(encoding="utf-8")
    new = [json.loads(x) for x in train.splitlines() if x.startswith('{"id": "en-new-001')]
    assert [r["position"] for r in new] == [0, 1, 2]
    text = json.loads(next(x for x in (d / "articles" / "texts.jsonl").read_text(encoding="utf-8").splitlines()
                           if '"en-new-001"' in x))["text"]
    assert all(text[r["start"]:r["end"]] == r["text"] for r in new)
    # what was there is kept, row for row
    old = set(before["train"].splitlines())
    assert old <= set(train.splitlines()) and len(train.splitlines()) == len(old) + 3
    for split in ("dev", "test"):
        assert (d / "articles" / f"{split}.jsonl").read_text(encoding="utf-8") == before[split]
    again = runner.invoke(app, ["data", "import-articles", "--add", str(batch), "--data-dir", str(d)])
    assert again.exit_code == 2 and "has it already" in again.output
    # a batch that repeats its own id is a duplicate within the batch, not one the corpus has
    twice = tmp_path / "twice.jsonl"
    row = json.loads(batch.read_text(encoding="utf-8"))
    for _ in range(2):
        _append(twice, {**row, "article_id": "en-new-002"})
    dup = runner.invoke(app, ["data", "import-articles", "--add", str(twice), "--data-dir", str(d)])
    assert dup.exit_code == 2 and "en-new-002" in dup.output and "has it already" not in dup.output
