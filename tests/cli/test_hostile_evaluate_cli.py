"""`psipo evaluate` with a max_new_tokens past the models' positions: one line, exit 2, before sampling."""

from __future__ import annotations

from psipo.cli import main
from psipo.lm.fixtures import make_tiny_model_dir, write_jsonl


def test_responses_longer_than_the_model_are_refused_before_sampling(tmp_path, capsys, monkeypatch):
    # It used to start sampling and die with a RuntimeError traceback (an allocation of 25 GB).
    make_tiny_model_dir(tmp_path / "base", layers=1, hidden=16, heads=2, vocab=32, seed=0, max_position_embeddings=64)
    write_jsonl([{"prompt": f"w{i} w{i + 3}"} for i in range(3)], tmp_path / "prompts.jsonl")
    (tmp_path / "judges.py").write_text("def half(prompts, a, b):\n    return [0.5] * len(a)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    args = ["evaluate", "--model", "base", "--baseline", "base", "--prompts", "prompts.jsonl", "--judge",
            "judges:half", "--device", "cpu", "--progress", "false", "--out", "ev"]
    assert main([*args, "--max_new_tokens", "100000000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psipo: error: max_new_tokens: 100000000 tokens after a prompt of "), err
    assert "max_position_embeddings 64" in err[0]
    assert not (tmp_path / "ev").exists()
    assert main([*args, "--max_new_tokens", "8"]) == 0  # within the positions: sampled as before


def _pairs_workdir(root, monkeypatch):
    """A tiny model and six preference pairs in ``root``, the current folder: ``psipo evaluate
    --pairs`` arguments that score them (a model against itself)."""
    from psipo.lm.fixtures import make_synthetic_preferences

    make_tiny_model_dir(root / "base", layers=1, hidden=16, heads=2, vocab=64, seed=0)
    write_jsonl(make_synthetic_preferences(6, vocab=64, seed=1), root / "pairs.jsonl")
    monkeypatch.chdir(root)
    return ["evaluate", "--model", "base", "--baseline", "base", "--pairs", "pairs.jsonl", "--device", "cpu", "--progress", "false"]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psipo: error: "), err
    return err[0].removeprefix("psipo: error: ")


def test_a_tau_whose_ipo_target_reads_0_is_refused(tmp_path, capsys, monkeypatch):
    # --tau 1e308 scored h against an IPO target of 0 (2τ overflows), exit 0.
    args = _pairs_workdir(tmp_path, monkeypatch)
    assert main([*args, "--tau", "1e308", "--out", "ev"]) == 2
    assert _one_error_line(capsys).startswith("--tau: must be a finite number > 0 for which tau, 2·tau and IPO's target")
    assert not (tmp_path / "ev").exists()


def test_an_empty_pairs_split_is_refused_rather_than_read_as_the_whole_file(tmp_path, capsys, monkeypatch):
    args = _pairs_workdir(tmp_path, monkeypatch)
    assert main([*args, "--pairs_split", "", "--out", "ev"]) == 2
    assert _one_error_line(capsys) == "--pairs_split: is empty; give a split name (test) or a slice of it (test[:100])"
    assert not (tmp_path / "ev").exists()


def test_a_pairs_split_that_selects_no_rows_says_so(tmp_path, capsys, monkeypatch):
    # It said 'pairs: no valid preference rows in pairs.jsonl', as if the rows were bad.
    args = _pairs_workdir(tmp_path, monkeypatch)
    for split in ("train[100%:]", "train[5:5]"):
        assert main([*args, "--pairs_split", split, "--out", "ev"]) == 2
        assert _one_error_line(capsys) == f"pairs: the split {split!r} selects no rows of pairs.jsonl"
    assert not (tmp_path / "ev").exists()


def test_pairs_naming_a_folder_without_a_dataset_is_psipos_one_line(tmp_path, capsys, monkeypatch):
    # It said "cannot load '.' ...: dataset_name should be specified but got None" (datasets' words).
    args = _pairs_workdir(tmp_path, monkeypatch)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "README.md").write_text("# a project, not a dataset\n")
    monkeypatch.chdir(tmp_path / "project")
    args = [{"base": "../base", "pairs.jsonl": "."}.get(arg, arg) for arg in args]
    assert main([*args, "--out", "ev"]) == 2
    assert _one_error_line(capsys) == (
        "pairs: . is a folder that holds no dataset: expected a .jsonl/.json/.parquet file, a datasets save_to_disk "
        "folder, a folder of such files (one per split) or a Hugging Face dataset name"
    )
    assert not (tmp_path / "project" / "ev").exists()


def test_out_in_the_evaluated_models_folder_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    # --out run/final wrote evaluation.json and evaluation.md into the model's own folder, which
    # a later upload or a run's --overwrite then takes for the model's files.
    args = _pairs_workdir(tmp_path, monkeypatch)
    (tmp_path / "base").rename(tmp_path / "final")
    args = [{"base": "final"}.get(arg, arg) for arg in args]
    for out in ("final", "final/ev", "./final/../final/x"):
        assert main([*args, "--out", out]) == 2
        assert _one_error_line(capsys) == f"--out: {out} lies in the folder of model (final); write the evaluation elsewhere"
    assert not list((tmp_path / "final").glob("**/evaluation.*"))
    assert main([*args, "--out", "ev"]) == 0


def test_pairs_naming_a_model_folder_says_what_it_found(tmp_path, capsys, monkeypatch):
    # It said "cannot load 'base' ...: An error occurred while generating the dataset" (datasets' words).
    args = _pairs_workdir(tmp_path, monkeypatch)
    args = [{"pairs.jsonl": "base"}.get(arg, arg) for arg in args]
    assert main([*args, "--out", "ev"]) == 2
    assert _one_error_line(capsys) == (
        "pairs: base is a folder that holds no dataset: found chat_template.jinja, config.json, generation_config.json, "
        "model.safetensors, tokenizer.json, tokenizer_config.json (files whose columns differ, not one dataset); expected "
        "a .jsonl/.json/.parquet file, a datasets save_to_disk folder, a folder of such files (one per split) or a "
        "Hugging Face dataset name"
    )
    assert not (tmp_path / "ev").exists()
