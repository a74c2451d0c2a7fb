"""Batch inference as a Ray Data pipeline: read -> preprocess -> generate -> score -> write.

    shard numbers (the ones not written yet)         the driver; every row checked before any actor
      -> ReadPrompts the shard's rows from disk,     CPU, one small actor (parkrl.data.files.RowPlan:
                     chat template, tokenise          a slice at a time, never the whole file)
      -> Generate    EngineWorker.generate          actor pool: resources.rollout.num_workers engines
      -> Score       reward.cls (collect.score)     CPU, one small actor
      -> the driver writes each finished shard      infer.output/shard-000017.parquet (tmp + rename)

Shard k holds the input rows [k * infer.batch_size, (k + 1) * infer.batch_size), each row's
n completions (infer.n, or eval.n / filter.n / sample.n for those commands). A shard file
appears only complete (written to a temporary name, then renamed), and a rerun skips the shards
that exist, so a killed job run again writes every row exactly once. Sample j of input row i
is seeded with trainer.seed + i * n + j: the output does not depend on the number of engines,
the batch size or which run wrote the shard.

Ray Data's streaming executor runs the stages side by side and holds back the read side when
later stages fall behind, so memory is bounded by the batches in flight, not the data set: the
input is read a shard at a time (a JSONL file by line offsets, Parquet/CSV/Arrow through
`datasets`' memory-mapped cache), and the driver's check pass reads it in slices too. An
engine actor that dies (killed, OOM) is restarted by Ray (trainer.max_worker_restarts times) and
its batch retried on it. Every wait of the driver has a timeout (trainer.worker_timeout_s).
"""
from __future__ import annotations

import fcntl
import json
import os
import pickle
import queue
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Protocol

from parkrl.config import Config, ConfigError, DataConfig, RewardConfig, validate
from parkrl.data.files import atomic_write, plan_rows, write_jsonl
from parkrl.data.prompts import prompt_length_error, prompts_too_long, task_rows

MANIFEST = "_infer.json"  # what the shards of an output directory were made with
# Test-only: a path; the first engine actor to generate creates it and exits (tests/test_infer.py).
_TEST_DIE_ONCE = ""


class RowSource(Protocol):
    """The input rows, read a slice at a time: parkrl.data.files.RowPlan, or `TaskRows`."""

    def __len__(self) -> int: ...

    def rows(self, start: int, end: int) -> list[tuple[str, dict[str, Any]]]: ...


@dataclass
class TaskRows:
    """data.task's samples (generated in memory, as training does) as a RowSource."""

    items: list[tuple[str, dict[str, Any]]]

    def __len__(self) -> int:
        return len(self.items)

    def rows(self, start: int, end: int) -> list[tuple[str, dict[str, Any]]]:
        return self.items[start:end]


@dataclass
class InferSummary:
    output: Path
    rows: int  # input rows in the output (written now or before)
    written_rows: int  # input rows this run wrote
    skipped_shards: int  # shards already there
    tokens: int  # completion tokens this run generated
    seconds: float  # from the cluster's start to the last shard
    source: RowSource  # the input rows
    # after the first shard was written (start-up and the first batch excluded): rows, tokens, seconds
    steady: tuple[int, int, float] = (0, 0, 0.0)


# ---- the input -------------------------------------------------------------------------------
def input_rows(cfg: Config, role: str) -> tuple[str, str, RowSource]:
    """(the config key that named the input, its value, the rows) for `role` "infer" or "eval":
    infer.input, else data.train_file (infer) / data.eval_file (eval), else data.task's samples
    (data.train_seed and data.train_size for infer, data.eval_seed and data.eval_size for eval)."""
    d = cfg.data
    file_key = "data.train_file" if role == "infer" else "data.eval_file"
    for key, path in (("infer.input", cfg.infer.input), (file_key, getattr(d, file_key.split(".")[1]))):
        if path:
            seed = d.train_seed if role == "infer" else d.eval_seed
            return key, path, plan_rows(path, key, d, seed)
    split, size = ("train", d.train_size) if role == "infer" else ("eval", d.eval_size)
    return "data.task", d.task, TaskRows(task_rows(d, split, size))


def check_rows(source: RowSource, tokenizer, max_new_tokens: int, max_model_len: int, chunk: int = 1024) -> None:
    """Every input row maps to a sample (else the DatasetError naming its file and row) and its
    prompt fits the engine's context; read in slices of `chunk` rows."""
    over: list[tuple[str, int]] = []
    for start in range(0, len(source), chunk):
        rows = source.rows(start, start + chunk)
        over += prompts_too_long(tokenizer, [s for _, s in rows], [w for w, _ in rows], max_model_len - max_new_tokens)
    if over:
        raise prompt_length_error(over, max_new_tokens, max_model_len)


def check(cfg: Config, role: str) -> None:
    """The config checks of a training run that apply here, and infer.*'s own; before any actor."""
    from parkrl.config import _check_data

    from_file = bool(cfg.infer.input or (cfg.data.train_file if role == "infer" else cfg.data.eval_file))
    # Training's checks, with the data keys checked as infer reads them (no train/eval pairing).
    validate(replace(cfg, data=DataConfig(), trainer=replace(cfg.trainer, eval_every=0)))
    p: list[str] = []
    _check_data(replace(cfg, data=replace(cfg.data, train_file="x" if from_file else "", eval_file=""),
                        trainer=replace(cfg.trainer, eval_every=0)), p)
    if from_file and cfg.reward.cls == RewardConfig.cls:
        p.append(f"reward.cls={cfg.reward.cls}: it scores reasoning-gym tasks; rows from a file need a reward "
                 f"that reads sample['answer'], e.g. reward.cls=parkrl.rewards.MatchAnswerReward")
    if p:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(p))


def prepare_output(cfg: Config, manifest: dict[str, Any]) -> Path:
    """infer.output as a directory this job may write to; a directory of an earlier job with
    other settings is refused (its shards would mix two runs)."""
    given = cfg.infer.output
    if not given:
        raise ConfigError("infer.output: give the directory to write the results to, e.g. infer.output=out/infer")
    out = Path(given).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"infer.output={given!r} is a file, not a directory; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"infer.output={given!r}: cannot write there ({e.strerror or e}); give a writable "
                          f"directory") from None
    old = out / MANIFEST
    if old.is_file():
        before = json.loads(old.read_text())
        changed = [f"{k}: {before.get(k)!r} then, {v!r} now" for k, v in manifest.items() if before.get(k) != v]
        if changed:
            raise ConfigError(f"infer.output={given!r} holds the shards of a job with other settings ("
                              f"{'; '.join(changed)}); rerun with those settings to complete it, or give a new "
                              f"infer.output")
    else:
        atomic_write(old, json.dumps(manifest, indent=2).encode())
    for stale in out.glob(".shard-*.tmp-*"):  # a killed job's half-written shard
        stale.unlink(missing_ok=True)
    return out


def shard_path(out: Path, k: int, fmt: str) -> Path:
    return out / f"shard-{k:06d}.{fmt}"


def read_output(out: Path) -> list[dict[str, Any]]:
    """Every row of the shards in `out`, in (row_id, sample) order."""
    return [r for _, group in iter_groups(out) for r in group]


def iter_groups(out: Path) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """(row_id, its scored samples in order) for each input row of the shards in `out`, in
    row order, reading one shard at a time (shard k holds a contiguous range of rows)."""
    def shard_number(f: Path) -> int:
        return int(f.stem.split("-")[1])

    for f in sorted(out.glob("shard-*.*"), key=shard_number):
        if f.suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(f).to_pylist()
        elif f.suffix == ".jsonl":
            rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        else:
            continue
        groups: dict[int, list[dict[str, Any]]] = {}
        for r in sorted(rows, key=lambda r: (r["row_id"], r["sample"])):
            groups.setdefault(int(r["row_id"]), []).append(r)
        yield from groups.items()


def _write_shard(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    """One shard, sorted by (row_id, sample), at `path`: written to a temporary name, then renamed."""
    rows = sorted(rows, key=lambda r: (r["row_id"], r["sample"]))
    if fmt != "parquet":
        write_jsonl(path, rows)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    atomic_write(path, buf.getvalue().to_pybytes())


# ---- the stages (Ray Data UDFs) --------------------------------------------------------------
class ReadPrompts:
    """Read and preprocess: for each shard number, its input rows (from disk, a slice at a time)
    as the prompt token ids the engine continues (chat template + tokenise)."""

    def __init__(self, source: RowSource, model_path: str, batch_size: int) -> None:
        from parkrl.models import load_tokenizer

        self.source, self.batch_size = source, batch_size
        self.tok = load_tokenizer(model_path)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from parkrl.models import chat_prompt_ids

        out: dict[str, list] = {"row_id": [], "shard": [], "sample": [], "prompt_ids": []}
        for k in (int(k) for k in batch["shard"]):
            start = k * self.batch_size
            for row_id, (_, sample) in enumerate(self.source.rows(start, start + self.batch_size), start):
                out["row_id"].append(row_id)
                out["shard"].append(k)
                out["sample"].append(pickle.dumps(sample))
                out["prompt_ids"].append(chat_prompt_ids(self.tok, sample["messages"]))
        return out


class Generate:
    """An engine of the pool: parkrl's rollout worker (EngineWorker, the trainer's engine, built
    from rollout.* as in training), n completions per row."""

    def __init__(self, cfg: Config, model_path: str, n: int, die_once: str = "") -> None:
        from parkrl.workers.engine import EngineWorker

        self._slot = _claim_slot(cfg.resources.rollout.num_workers)  # which cores it binds to
        self.worker = EngineWorker(cfg, model_path, rank=self._slot[0])
        r = cfg.rollout
        self.n, self.max_new_tokens, self.temperature, self.seed = n, r.max_new_tokens, r.temperature, cfg.trainer.seed
        self.die_once = die_once

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from parkrl.engines import SamplingSpec

        if self.die_once and not os.path.exists(self.die_once):  # test-only: an engine lost mid-job
            Path(self.die_once).touch()
            os._exit(1)
        row_ids = [int(i) for i in batch["row_id"]]
        prompts = [[int(t) for t in p] for p in batch["prompt_ids"]]
        out: dict[str, list] = {k: [] for k in ("row_id", "shard", "sample", "sample_index", "prompt_tokens",
                                                "completion_ids", "finish_reason")}
        start = 0
        for end in [i for i in range(1, len(row_ids)) if row_ids[i] != row_ids[i - 1] + 1] + [len(row_ids)]:
            # A run of consecutive rows in one call; row i's sample j is seeded seed + i * n + j.
            spec = SamplingSpec(n=self.n, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                seed=self.seed + row_ids[start] * self.n, logprobs=False)
            groups = self.worker.generate(prompts[start:end], spec)
            for k, group in zip(range(start, end), groups):
                for j, c in enumerate(group):
                    out["row_id"].append(row_ids[k])
                    out["shard"].append(int(batch["shard"][k]))
                    out["sample"].append(batch["sample"][k])
                    out["sample_index"].append(j)
                    out["prompt_tokens"].append(len(prompts[k]))
                    out["completion_ids"].append(list(c.token_ids))
                    out["finish_reason"].append(c.finish_reason)
            start = end
        return out

    def __del__(self) -> None:  # Ray Data's graceful end of the pool: stop the engine (frees /dev/shm)
        worker = getattr(self, "worker", None)
        if worker is not None:
            worker.shutdown()


class Score:
    """Score: the completions' text and reward.cls's reward (parkrl.collect.score), on CPU."""

    def __init__(self, cfg: Config, model_path: str) -> None:
        from parkrl.models import load_tokenizer
        from parkrl.plugins import import_plugins
        from parkrl.rewards import load_reward

        import_plugins(cfg.trainer.imports)
        self.tok = load_tokenizer(model_path)
        self.reward_fn = load_reward(cfg.reward.cls, dict(cfg.reward.args))
        self.on_error = cfg.reward.on_error

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from parkrl.collect import score

        samples = [pickle.loads(b) for b in batch["sample"]]
        ids = [[int(t) for t in c] for c in batch["completion_ids"]]
        rewards, _ = score(self.reward_fn, self.tok, ids, samples, self.on_error)
        texts = self.tok.batch_decode(ids, skip_special_tokens=True)
        return {
            "row_id": batch["row_id"], "shard": batch["shard"], "sample": batch["sample_index"],
            "question": [str(s.get("question", "")) for s in samples],
            "answer": [str(s.get("answer", "")) for s in samples],
            "messages": [json.dumps(s["messages"], ensure_ascii=False) for s in samples],
            "completion": texts,
            "prompt_tokens": batch["prompt_tokens"],
            "completion_tokens": [len(i) for i in ids],
            "finish_reason": batch["finish_reason"],
            "reward": [float(r) for r in rewards],
            "correct": [bool(self.reward_fn.is_correct(r)) for r in rewards],
        }


def _claim_slot(n: int) -> tuple[int, Any]:
    """(rank, lock) for an engine actor of this job on this node: the first of `n` slots no live
    actor holds (a file lock, released when the process ends, so a restarted actor takes the
    slot of the one it replaces). The rank picks the cores the engine binds to (cpu_slot)."""
    d = _slot_dir()
    d.mkdir(exist_ok=True)
    for k in range(n):
        f = open(d / f"slot-{k}", "w")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return k, f
        except BlockingIOError:
            f.close()
    return 0, None


# ---- the job ---------------------------------------------------------------------------------
def say(message: str) -> None:
    print(message, flush=True)


def run_infer(cfg: Config, n: int | None = None, role: str = "infer", log=say) -> InferSummary:
    """Run batch inference as infer.* says (the module docstring), `n` completions per row
    (default infer.n); `role` "eval" reads data.eval_file rather than data.train_file. Returns
    what was written. Every check (config, every input row, output directory, model) runs
    before any actor starts."""
    from parkrl.models import load_tokenizer, resolve_model_path
    from parkrl.plugins import import_plugins

    n = cfg.infer.n if n is None else n
    import_plugins(cfg.trainer.imports)
    check(cfg, role)
    key, value, source = input_rows(cfg, role)
    model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    check_rows(source, load_tokenizer(model_path), cfg.rollout.max_new_tokens, cfg.rollout.max_model_len)
    i = cfg.infer
    manifest = {"input": f"{key}={value!r}",
                "rows": len(source), "batch_size": i.batch_size, "n": n, "format": i.format,
                "model": cfg.model.path, "seed": cfg.trainer.seed}
    out = prepare_output(cfg, manifest)
    size, total = i.batch_size, len(source)
    shards = range((total + size - 1) // size)
    pending = [k for k in shards if not shard_path(out, k, i.format).exists()]
    skipped = len(shards) - len(pending)
    if skipped and pending:
        log(f"[parkrl] infer: {skipped} of {len(shards)} shard(s) already in {out}; generating the other {len(pending)}")
    t0 = time.monotonic()
    if not pending:
        log(f"[parkrl] infer: {out} is complete ({total} rows); nothing to do")
        return InferSummary(out, total, 0, skipped, 0, 0.0, source)
    expected = {k: (min((k + 1) * size, total) - k * size) * n for k in pending}
    from parkrl.workers.cluster import ray_cluster

    with ray_cluster(cfg):
        try:
            done_rows, tokens, steady = _run_pipeline(cfg, model_path, source, n, expected, out, log, t0)
        finally:
            shutil.rmtree(_slot_dir(), ignore_errors=True)
    secs = time.monotonic() - t0
    warm = (f"; after the first shard {steady[0] / steady[2]:.2f} rows/s, {steady[1] / steady[2]:.1f} tokens/s"
            if steady[0] > 0 and steady[2] > 0 else "")
    log(f"[parkrl] infer: done: {done_rows} rows x {n} samples, {tokens} tokens in {secs:.1f} s: "
        f"{done_rows / secs:.2f} rows/s, {tokens / secs:.1f} tokens/s (start-up included){warm} -> {out}")
    return InferSummary(out, total, done_rows, skipped, tokens, secs, source, steady)


def _run_pipeline(cfg: Config, model_path: str, source: RowSource, n: int, expected: dict[int, int], out: Path,
                  log, t0: float) -> tuple[int, int, tuple[int, int, float]]:
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.trainer.verbose
    ctx.print_on_execution_start = cfg.trainer.verbose
    res, i = cfg.resources.rollout, cfg.infer
    light = {"num_cpus": 0.25, "concurrency": 1}  # tokenising and scoring are cheap next to generation
    # One block per shard still to write; the read stage turns each into that shard's rows.
    ds = ray.data.from_items([{"shard": k} for k in expected], override_num_blocks=len(expected))
    ds = ds.map_batches(ReadPrompts, fn_constructor_args=(source, model_path, i.batch_size), batch_size=1, **light)
    with warnings.catch_warnings():  # Ray 2.60 takes max_restarts only as a (deprecated) remote argument
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = ds.map_batches(
            Generate, fn_constructor_args=(cfg, model_path, n, _TEST_DIE_ONCE), batch_size=i.batch_size,
            concurrency=res.num_workers, num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker or None,
            resources=dict(res.custom_resources) or None, label_selector=dict(res.node_labels) or None,
            runtime_env=dict(res.runtime_env) or None,
            # a dead engine actor is restarted (trainer.max_worker_restarts times) and its batch retried on it
            max_restarts=cfg.trainer.max_worker_restarts, max_task_retries=-1,
        )
    ds = ds.map_batches(Score, fn_constructor_args=(cfg, model_path), batch_size=i.batch_size * n, **light)
    pending: dict[int, list[dict]] = {}
    done_rows = tokens = written = 0
    last_log = time.monotonic()
    first: tuple[int, int, float] | None = None  # rows, tokens, time when the first shard was written
    for batch in _batches_with_timeout(ds, cfg.trainer.worker_timeout_s):
        cols = {k: (v.tolist() if hasattr(v, "tolist") else list(v)) for k, v in batch.items()}
        for r in range(len(cols["row_id"])):
            row = {k: cols[k][r] for k in cols}
            row["messages"] = json.loads(row["messages"])
            k = row.pop("shard")
            pending.setdefault(k, []).append(row)
            tokens += row["completion_tokens"]
            if len(pending[k]) == expected[k]:
                _write_shard(shard_path(out, k, i.format), pending.pop(k), i.format)
                done_rows += expected[k] // n
                written += 1
                now = time.monotonic()
                first = first or (done_rows, tokens, now)
                if now - last_log >= 10 or written == len(expected):
                    secs = now - t0
                    log(f"[parkrl] infer: {written}/{len(expected)} shards, {done_rows} rows, {tokens} tokens: "
                        f"{done_rows / secs:.2f} rows/s, {tokens / secs:.1f} tokens/s")
                    last_log = now
    if pending:
        raise RuntimeError(f"infer: shards {sorted(pending)} came back incomplete; rerun to complete them")
    now = time.monotonic()
    steady = (done_rows - first[0], tokens - first[1], now - first[2]) if first else (0, 0, 0.0)
    return done_rows, tokens, steady


def _batches_with_timeout(ds, timeout_s: float) -> Iterator[dict[str, Any]]:
    """`ds.iter_batches()` read by a thread; no batch within `timeout_s` is a WorkerTimeout."""
    from parkrl.workers.group import WorkerTimeout

    q: queue.Queue = queue.Queue(maxsize=2)  # the driver holds at most a few batches
    end = object()

    def feed() -> None:
        try:
            for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
                q.put(("batch", b))
            q.put(("end", end))
        except BaseException as e:  # noqa: BLE001 - handed to the driver's thread
            q.put(("error", e))

    threading.Thread(target=feed, daemon=True, name="parkrl-infer-feed").start()
    while True:
        try:
            kind, value = q.get(timeout=timeout_s)
        except queue.Empty:
            raise WorkerTimeout(f"infer: no results for trainer.worker_timeout_s={timeout_s:.0f} s (an engine hung, "
                                f"or the cluster lacks resources.rollout.* for the engines)") from None
        if kind == "end":
            return
        if kind == "error":
            raise value
        yield value


def _slot_dir() -> Path:
    """Where this job's engine actors on this node claim their slots."""
    import ray

    return Path(tempfile.gettempdir(), f"parkrl-infer-slots-{os.getuid()}-{ray.get_runtime_context().get_job_id()}")
