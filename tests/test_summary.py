"""What a person reads: a stage's line (``--json`` for the full result) and ``aepipe summary``.

The whole pipeline's output (line count, no warnings, the summary against metrics/eval.json) is
checked on a real `dvc repro` in tests/test_dvc_pipeline.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aepipe.cli import main

REPO = Path(__file__).resolve().parents[1]
PARAMS = str(REPO / "params.yaml")
EVAL = {"test_accuracy": 0.9777777777777777, "test_macro_f1": 0.9776, "val_accuracy": 0.97, "n_test": 360}
REGISTRATION = {
    "model_name": "aepipe-digits",
    "version": "3",
    "alias": "challenger",
    "created": True,
    "this_run_selected": True,
}


def summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(
        [
            "--params",
            PARAMS,
            "summary",
            "--metrics",
            str(tmp_path / "eval.json"),
            "--registration",
            str(tmp_path / "registration.json"),
        ]
    )
    out = capsys.readouterr()
    return code, out.out, out.err


def test_summary_reads_the_metrics_and_the_registration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "eval.json").write_text(json.dumps(EVAL))
    (tmp_path / "registration.json").write_text(json.dumps(REGISTRATION))
    code, out, _ = summary(tmp_path, capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == (
        f"Result:  test accuracy 0.9778, macro-F1 0.9776 on 360 test images ({tmp_path / 'eval.json'})"
    )
    assert lines[1] == (
        "Model:   aepipe-digits v3, alias challenger (this run's model): models:/aepipe-digits@challenger"
    )
    assert ["make ui" in lines[2], "aepipe promote" in lines[3], "dvc exp run -S" in lines[4]] == [True] * 3
    assert len(lines) == 5 and max(map(len, lines[1:])) <= 110  # (line 0 holds a tmp path)

    (tmp_path / "registration.json").write_text(json.dumps(REGISTRATION | {"this_run_selected": False}))
    code, out, _ = summary(tmp_path, capsys)
    assert "an earlier run's model, better on validation; this run's was not registered" in out


def test_summary_without_a_run_says_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = summary(tmp_path, capsys)
    assert code == 2 and out == ""
    assert err.strip() == (
        f"aepipe summary: error: {tmp_path / 'eval.json'} not found: no test metrics yet; "
        "run the pipeline first (`make run` or `dvc repro`)"
    )

    (tmp_path / "eval.json").write_text(json.dumps(EVAL))  # evaluate ran, register did not
    code, out, _ = summary(tmp_path, capsys)
    assert code == 0
    assert f"Model:   none registered ({tmp_path / 'registration.json'} not found" in out


@pytest.mark.parametrize(
    ("eval_text", "expect"),
    [
        ("{not json", "eval.json: cannot read test metrics"),
        ("[1, 2]", "eval.json: expected a JSON object"),
        (json.dumps({"test_accuracy": 0.9}), "eval.json: field 'test_macro_f1' is missing or not a"),
        (json.dumps(EVAL | {"test_accuracy": "high"}), "eval.json: field 'test_accuracy' is missing"),
    ],
)
def test_summary_names_the_file_and_field_at_fault(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], eval_text: str, expect: str
) -> None:
    (tmp_path / "eval.json").write_text(eval_text)
    code, out, err = summary(tmp_path, capsys)
    assert code == 2 and out == ""
    assert expect in err and "re-run the pipeline (`dvc repro`)" in err


def test_a_stage_prints_one_line_and_json_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    capsys.readouterr()
    assert main(["--params", PARAMS, "prepare", "--out", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    counts = "train 1,293 / val 144 / test 360"
    assert out == f"aepipe prepare: 1,797 images 1x8x8, 10 classes; {counts} -> {tmp_path / 'data'}\n"
    assert main(["--params", PARAMS, "prepare", "--out", str(tmp_path / "data"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    meta = json.loads((tmp_path / "data/meta.json").read_text())
    assert result["data_hash"] == meta["data_hash"]
    assert result["counts"] == {"train": 1293, "val": 144, "test": 360} and result["classes"] == 10
