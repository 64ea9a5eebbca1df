"""One home per contract: defaults from the packaged schema, table specs shared by writer
and reader."""

from __future__ import annotations

import pandas as pd
import pytest

from speechlens import schema
from speechlens.tables import TableSpec, read_table, write_table


def test_packaged_schema_is_the_workflow_schema(repo):
    assert schema.SCHEMA_PATH.resolve() == (repo / "workflow/schemas/config.schema.yaml").resolve()


def test_defaults_follow_refs_and_nest():
    task = schema.defaults("$defs.task")
    assert task["folds"] == 5 and task["seed"] == 0
    attention = schema.defaults("attention")
    assert attention["ablation"]["mode"] == "zero"  # nested object defaults
    assert "models" in attention


def test_defaults_are_copies():
    a = schema.defaults("$defs.task")
    a["folds"] = 99
    assert schema.defaults("$defs.task")["folds"] == 5


def test_merge_keeps_nested_defaults():
    merged = schema.merge({"ablation": {"mode": "mean"}}, "attention")
    assert merged["ablation"]["mode"] == "mean"
    assert merged["ablation"]["task"] == schema.defaults("attention")["ablation"]["task"]


def test_unknown_path_names_the_key():
    with pytest.raises(KeyError, match="probing.nope"):
        schema.subschema("probing.nope")


SPEC = TableSpec("toy", ("name", "fold", "value"), numeric=("value",), text=("fold",))


def test_table_roundtrip_and_order(tmp_path):
    path = tmp_path / "t.tsv"
    write_table(SPEC, pd.DataFrame({"value": [0.5, 1.0], "fold": ["0", "mean"], "name": "a"}), path)
    assert path.read_text().splitlines()[0] == "name\tfold\tvalue"
    table = read_table(SPEC, path)
    assert table["value"].tolist() == [0.5, 1.0] and table["fold"].tolist() == ["0", "mean"]


def test_reader_names_file_line_and_column(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("name\tfold\tvalue\na\t0\tzero\n")
    with pytest.raises(ValueError, match=r"t\.tsv: line 2: value 'zero' is not a number"):
        read_table(SPEC, path)
    path.write_text("name\tvalue\na\t1\n")
    with pytest.raises(ValueError, match=r"lacks columns \['fold'\]"):
        read_table(SPEC, path)


def test_writer_refuses_missing_columns_and_leaves_nothing(tmp_path):
    path = tmp_path / "t.tsv"
    with pytest.raises(ValueError, match="lacks columns"):
        write_table(SPEC, pd.DataFrame({"name": ["a"]}), path)
    assert list(tmp_path.iterdir()) == []
