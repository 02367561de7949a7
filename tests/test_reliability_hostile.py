"""Hostile inputs, third round: invariants over path fields, file contents and interruptions.

Checked as properties (hypothesis) rather than single cases:

* a path refused up front (an input inside the experiment folder, a folder that is a file, a log
  file below a regular file, a malformed tracker URI) exits 2 with one line, no traceback, and
  leaves every file where it was — nothing written, nothing deleted, anywhere;
* ``--overwrite`` deletes nothing until the new run has its iteration 0, and gives the old
  experiment back when the new run stops before that;
* every reader of a file a run writes survives arbitrary damage: it returns what it can or
  raises a :class:`~bo_voids.exceptions.StateError` naming the file — never another exception;
* a resume repairs a damaged ``events.jsonl`` and continues the uninterrupted history.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bo_voids import cli, optimize
from bo_voids._io import read_jsonl
from bo_voids.exceptions import (
    ConfigError,
    ExperimentExistsError,
    ResumeMismatchError,
    StateError,
    TrackerUnavailableError,
)
from bo_voids.ownership import check_run_paths
from bo_voids.pipeline import OptimizationPipeline
from bo_voids.state import (
    MANIFEST,
    REPLACED,
    ExperimentLock,
    ExperimentStore,
    effective_status,
    load_experiment,
    read_json,
)
from bo_voids.testing.runs import run_config_file, tiny_config
from bo_voids.tracking import check_tracking_uri, probe_tracking_server

FAST = settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OptimizationPipeline, "_plot", lambda self: None)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (content) and folder (``None``) under ``root``."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = Path(path).read_bytes()
    return out


def assert_one_line_no_traceback(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Paths refused up front
# ---------------------------------------------------------------------------------------------

#: Where an input is put relative to the experiment folder ``work/exp``.
PLACES = ("outside", "inside", "experiment", "below_file")


def _place(work: Path, where: str, name: str, *, folder: bool) -> Path:
    """Create an input at the chosen place (``below_file``: under a regular file, not created)."""
    exp = work / "exp"
    if where == "outside":
        path = work / "inputs" / name
    elif where == "inside":
        path = exp / "sub" / name
    elif where == "experiment":
        return exp
    else:
        blocker = work / "plainfile"
        blocker.write_text("user data")
        return blocker / name
    if folder:
        path.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


@FAST
@given(
    target=st.sampled_from(PLACES[:3]),
    warm=st.sampled_from((None, *PLACES[:3])),
    log=st.sampled_from((None, *PLACES)),
    config_in=st.sampled_from(PLACES[:2]),
    exp_kind=st.sampled_from(("absent", "experiment", "file")),
    mode=st.sampled_from(((), ("--overwrite",), ("--resume",))),
)
def test_bad_paths_exit_2_before_touching_anything(
    repo_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    target: str,
    warm: str | None,
    log: str | None,
    config_in: str,
    exp_kind: str,
    mode: tuple[str, ...],
) -> None:
    work = tmp_path_factory.mktemp("paths")
    exp = work / "exp"
    if exp_kind == "experiment":  # a stand-in experiment: the check must come before reading it
        exp.mkdir()
        (exp / MANIFEST).write_text('{"config": {}, "status": "completed"}')
        (exp / "iteration_0").mkdir()
        (exp / "iteration_0" / "scores.json").write_text("{}")
    elif exp_kind == "file":
        exp.write_text("not a folder")
    if exp_kind == "file":  # nothing can be placed inside it
        target, warm = "experiment", None
        log = "outside" if log == "inside" else log
        config_in = "outside"
    targets = _place(work, target, "targets", folder=True)
    if targets.is_dir():
        for i in range(2):
            (targets / f"t{i}.png").write_bytes(b"\x89PNG precious")
    changes: dict = {"experiment_dir": str(exp), "target_image_dir": str(targets)}
    if warm is not None:
        changes["warm_start"] = str(_place(work, warm, "warm", folder=True))
    log_file = _place(work, log, "run.log", folder=False) if log is not None else None
    config_file = _place(work, config_in, "tiny.yaml", folder=False)
    cfg = tiny_config(repo_root, work, **changes)
    config_file.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    bad = (
        exp_kind == "file"
        or target != "outside"
        or warm not in (None, "outside")
        or log not in (None, "outside")
        or config_in != "outside"
    )
    if not bad:
        return  # a valid set of paths starts a real run: not this test's business
    before = snapshot(work)
    args = ["--config", str(config_file), "--quiet", "--no-report", *mode]
    if log_file is not None:
        args += ["--log-file", str(log_file)]
    t0 = time.perf_counter()
    code = optimize.main(args)
    err = capsys.readouterr().err
    assert code == cli.ExitCode.USAGE, err
    assert_one_line_no_traceback(err)
    assert "--resume" not in err  # resuming cannot help
    assert snapshot(work) == before  # nothing written, nothing deleted
    assert time.perf_counter() - t0 < 30


def test_the_issues_overwrite_cases_keep_the_users_data(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """targets inside the experiment + --overwrite; warm_start = the experiment + --overwrite."""
    exp = tmp_path / "exp"
    (exp / "targets").mkdir(parents=True)
    (exp / MANIFEST).write_text("{}")
    for i in range(3):
        (exp / "targets" / f"t{i}.png").write_bytes(b"precious")
    for changes in ({"target_image_dir": str(exp / "targets")}, {"warm_start": str(exp)}):
        cfg = tiny_config(repo_root, tmp_path, **changes)
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        before = snapshot(tmp_path)
        code = optimize.main(["--config", str(path), "--quiet", "--no-report", "--overwrite"])
        err = capsys.readouterr().err
        assert code == 2 and "inside the experiment folder" in err and str(exp) in err
        assert_one_line_no_traceback(err)
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_a_config_that_is_not_a_small_regular_file_is_refused_without_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A FIFO would hang the read, /dev/zero would fill the memory."""
    places = {"fifo": "c.yaml", "device": "/dev/zero", "folder": ".", "huge": "huge.yaml"}
    path = tmp_path / places[kind]
    if kind == "fifo":
        os.mkfifo(path)
    if kind == "huge":
        path.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    code = optimize.main(["--config", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and str(path) in err
    assert_one_line_no_traceback(err)


def test_the_log_file_is_never_an_input(
    repo_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    targets = tmp_path / "targets"
    targets.mkdir()
    cfg = tiny_config(repo_root, tmp_path, target_image_dir=str(targets))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    for log in (path, targets / "run.log"):
        before = snapshot(tmp_path)
        code = optimize.main(["--config", str(path), "--quiet", "--log-file", str(log)])
        err = capsys.readouterr().err
        assert code == 2 and "--log-file" in err
        assert_one_line_no_traceback(err)
        assert snapshot(tmp_path) == before


@FAST
@given(parts=st.lists(st.sampled_from(("a", "b", "..", ".")), min_size=0, max_size=4))
def test_ownership_rule_is_about_resolved_paths(
    repo_root: Path, tmp_path_factory: pytest.TempPathFactory, parts: list[str]
) -> None:
    """An input given by any spelling (``..``, ``.``, a symlink) is refused iff it lies inside."""
    work = tmp_path_factory.mktemp("resolve")
    exp = work / "exp"
    (exp / "a" / "b").mkdir(parents=True)
    (work / "a" / "b").mkdir(parents=True)
    (work / "link").symlink_to(exp)
    base = work / "link"
    targets = base.joinpath(*parts) if parts else base
    if not targets.is_dir():
        return
    cfg = tiny_config(repo_root, work, target_image_dir=str(targets))
    inside = targets.resolve() == exp.resolve() or exp.resolve() in targets.resolve().parents
    encloses = targets.resolve() in exp.resolve().parents
    if inside or encloses:
        with pytest.raises(ConfigError, match="target_image_dir"):
            check_run_paths(cfg)
    else:
        check_run_paths(cfg)


# ---------------------------------------------------------------------------------------------
# --overwrite: set aside, deleted once the new run has its iteration 0, restored otherwise
# ---------------------------------------------------------------------------------------------


def _fake_experiment(store: ExperimentStore) -> dict[str, bytes | None]:
    (store.root / "iteration_0").mkdir(parents=True)
    (store.root / "iteration_0" / "scores.json").write_text('{"old": true}')
    (store.root / "history.csv").write_text("old\n")
    (store.root / MANIFEST).write_text('{"config": {"old": 1}, "status": "completed"}')
    return snapshot(store.root)


def test_overwrite_sets_aside_then_restores_or_discards(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path)
    store = ExperimentStore(cfg.experiment_dir)
    old = _fake_experiment(store)
    with ExperimentLock(store.root):
        store.create(cfg, {"name": "handcrafted", "fingerprint": "x"}, overwrite=True)
        assert (store.root / REPLACED / "iteration_0" / "scores.json").exists()
        assert not store.iteration_dir(0).exists()
        assert store.restore_replaced()  # the new run stopped before its iteration 0
    assert {k: v for k, v in snapshot(store.root).items() if not k.startswith(".lock")} == old
    with ExperimentLock(store.root):
        store.create(cfg, {"name": "handcrafted", "fingerprint": "x"}, overwrite=True)
        with store.writing_iteration(0) as partial:
            (partial / "scores.json").write_text("{}")
        assert not (store.root / REPLACED).exists()  # started cleanly: the old one is gone
        assert not store.restore_replaced()


def test_overwrite_never_clears_files_bo_voids_did_not_write(
    repo_root: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(repo_root, tmp_path)
    store = ExperimentStore(cfg.experiment_dir)
    _fake_experiment(store)
    for name in ("notes.txt", ".git", "iteration_notes"):
        (store.root / name).write_text("mine")
        before = snapshot(store.root)
        with pytest.raises(ExperimentExistsError, match=name), ExperimentLock(store.root):
            store.create(cfg, {"name": "h", "fingerprint": "x"}, overwrite=True)
        assert {k: v for k, v in snapshot(store.root).items() if not k.startswith(".lock")} == {
            k: v for k, v in before.items() if not k.startswith(".lock")
        }
        (store.root / name).unlink()


def test_a_failing_overwrite_gives_the_old_experiment_back(
    repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    store = ExperimentStore(cfg.experiment_dir)
    old = _fake_experiment(store)

    def broken(self, *a, **k):
        raise RuntimeError("iteration 0 broke")

    monkeypatch.setattr(OptimizationPipeline, "step", broken)
    with pytest.raises(RuntimeError):
        OptimizationPipeline(cfg, overwrite=True).run_full_experiment()
    assert {k: v for k, v in snapshot(store.root).items() if not k.startswith(".lock")} == old


# ---------------------------------------------------------------------------------------------
# Readers that survive damage
# ---------------------------------------------------------------------------------------------

_json_objects = st.dictionaries(
    st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3
)
_lines = st.one_of(
    _json_objects.map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=30).filter(lambda b: b"\n" not in b),
)


@FAST
@given(lines=st.lists(_lines, max_size=8), tail=st.binary(max_size=10))
def test_read_jsonl_skips_and_counts_bad_lines(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes], tail: bytes
) -> None:
    path = tmp_path_factory.mktemp("jsonl") / "events.jsonl"
    tail = tail.replace(b"\n", b"")
    path.write_bytes(b"".join(line + b"\n" for line in lines) + tail)
    read = read_jsonl(path)
    good = []
    for line in lines:
        try:
            value = json.loads(line.decode("utf-8"))
        except ValueError:
            continue
        if isinstance(value, dict):
            good.append(value)
    assert read.records == good
    assert read.skipped == sum(1 for line in lines if line.strip()) - len(good)
    assert read.incomplete == bool(tail.strip())


def _damage(data: bytes, cut: int, garbage: bytes) -> bytes:
    cut = cut % (len(data) + 1)
    return data[:cut] + garbage + data[cut + len(garbage) :]


@pytest.fixture(scope="module")
def finished_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    cfg = tiny_config(repo_root, folder, max_iterations=1)
    run_config_file(cfg, folder)
    return Path(cfg.experiment_dir)


#: Files of an experiment and how their readers must react to damage.
READ_BACK = (
    MANIFEST,
    "history.csv",
    "events.jsonl",
    "iteration_0/metadata.json",
    "iteration_0/scores.json",
    "iteration_1/proposals.json",
    "iteration_1/embeddings.npy",
)


@FAST
@given(
    name=st.sampled_from(READ_BACK),
    cut=st.integers(min_value=0, max_value=10_000),
    garbage=st.binary(min_size=1, max_size=40),
)
def test_every_reader_survives_damage_or_names_the_file(
    finished_run: Path,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    cut: int,
    garbage: bytes,
) -> None:
    import shutil

    from bo_voids.progress import read_events

    copy = tmp_path_factory.mktemp("damaged") / "exp"
    shutil.copytree(finished_run, copy)
    target = copy / name
    target.write_bytes(_damage(target.read_bytes(), cut, garbage))
    try:
        run = load_experiment(copy)
    except StateError as exc:
        assert name in str(exc) or str(copy) in str(exc)
    except ConfigError:
        assert name == MANIFEST  # a damaged config snapshot is refused like a bad config
    else:
        assert run.status in {"completed", "running", "interrupted", "failed"} or name == MANIFEST
    assert isinstance(read_events(copy), list)


def test_a_damaged_history_is_read_with_a_warning(finished_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "exp"
    shutil.copytree(finished_run, copy)
    rows = list(csv.reader(io.StringIO((copy / "history.csv").read_text())))
    with (copy / "history.csv").open("ab") as fh:
        fh.write(b"\xff\xfe,broken\n\x00\x00\n")
    with pytest.warns(UserWarning, match="damaged row"):
        run = load_experiment(copy)
    assert len(run.history) == len(rows) - 1


def test_read_json_refuses_the_wrong_type(tmp_path: Path) -> None:
    path = tmp_path / "scores.json"
    path.write_text("[1, 2]")
    with pytest.raises(StateError, match="scores.json"):
        read_json(path, dict)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(StateError, match="damaged"):
        read_json(path)


# ---------------------------------------------------------------------------------------------
# Resume after damage and interruption
# ---------------------------------------------------------------------------------------------


def test_resume_repairs_a_damaged_events_log(
    finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: non-UTF-8 bytes and a cut last line, then --resume."""
    import shutil

    from bo_voids.progress import read_events

    copy = tmp_path / "exp"
    shutil.copytree(finished_run, copy)
    events = copy / "events.jsonl"
    with events.open("ab") as fh:
        fh.write(b'\xff\xfe\xfd not utf8\n{"event": "iteration", "iter')
    cfg = load_experiment(copy).config.replace(experiment_dir=str(copy), max_iterations=2)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    code = optimize.main(["--config", str(path), "--quiet", "--no-report", "--resume"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    events.read_bytes().decode("utf-8")  # repaired: every byte UTF-8 again
    assert [r["iteration"] for r in read_events(copy)] == [0, 1, 2]
    assert read_jsonl(events).skipped == 0


def test_stale_running_reads_interrupted(repo_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(repo_root, tmp_path)
    store = ExperimentStore(cfg.experiment_dir)
    with ExperimentLock(store.root):
        manifest = store.create(cfg, {"name": "h", "fingerprint": "x"})
        assert effective_status(store.root, manifest) == "running"  # held, by this process
    assert effective_status(store.root, manifest) == "interrupted"  # the lock is free
    assert effective_status(store.root, {**manifest, "status": "completed"}) == "completed"


def test_resume_across_versions_warns_and_refuses_another_layout(
    repo_root: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(repo_root, tmp_path)
    store = ExperimentStore(cfg.experiment_dir)
    info = {"name": "h", "fingerprint": "x"}
    with ExperimentLock(store.root):
        store.create(cfg, info)
    store.update_manifest(versions={"bo_voids": "0.0.1"})
    with pytest.warns(UserWarning, match=r"0\.0\.1"):
        store.check_resumable(cfg, info)
    store.update_manifest(layout_version=99)
    with pytest.raises(ResumeMismatchError, match="layout"):
        store.check_resumable(cfg, info)


# ---------------------------------------------------------------------------------------------
# Trackers: checked up front, bounded in time
# ---------------------------------------------------------------------------------------------


@FAST
@given(uri=st.text(max_size=30))
def test_any_tracking_uri_is_accepted_or_a_config_error(uri: str) -> None:
    try:
        check_tracking_uri(uri)
    except ConfigError as exc:
        assert "--mlflow" in str(exc)


def test_an_unreachable_tracker_fails_fast() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(TrackerUnavailableError, match=str(port)):
        probe_tracking_server(f"http://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 10
    with pytest.raises(ConfigError, match="not a valid"):
        check_tracking_uri("http://[::1")


def test_unreachable_tracker_warns_or_stops_with_strict(caplog: pytest.LogCaptureFixture) -> None:
    from bo_voids.tracking import MLflowCallback

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    callbacks = [MLflowCallback(tracking_uri=f"http://127.0.0.1:{port}")]
    assert optimize._start(callbacks) == []
    assert "goes on without tracking" in caplog.text
    with pytest.raises(ConfigError, match="strict"):
        optimize._start(callbacks, strict=True)


# ---------------------------------------------------------------------------------------------
# One terminal policy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [(ConfigError("bad key"), 2), (StateError("disk"), 1), (RuntimeError("bug"), 1)],
)
def test_failures_are_one_line_and_tracebacks_only_with_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, exc, code
) -> None:
    def boom(argv):
        raise exc

    monkeypatch.delenv("BO_VOIDS_DEBUG", raising=False)
    monkeypatch.setattr(cli, "_debug", False)
    assert cli.call_guarded(boom, []) == code
    assert_one_line_no_traceback(capsys.readouterr().err)
    assert cli.call_guarded(boom, ["--debug"]) == code
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_failure_in_a_run_keeps_its_traceback_in_the_log_file(
    repo_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = tiny_config(repo_root, tmp_path, max_iterations=0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def broken(self, *a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(OptimizationPipeline, "step", broken)
    monkeypatch.setattr(cli, "_debug", False)
    log = tmp_path / "logs" / "run.log"
    code = optimize.main(["--config", str(path), "--quiet", "--no-report", "--log-file", str(log)])
    err = capsys.readouterr().err
    assert code == 1
    assert_one_line_no_traceback(err)
    assert "ZeroDivisionError: a bug" in err
    assert "Traceback" in log.read_text()


# ---------------------------------------------------------------------------------------------
# Interruptions at random points (slow: a few tiny runs per example)
# ---------------------------------------------------------------------------------------------


def _raise(kind: type[BaseException]):
    def action(phase: str, iteration: int) -> None:
        raise kind()

    return action


@pytest.fixture(scope="module")
def reference_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("reference")
    cfg = tiny_config(repo_root, folder, max_iterations=2)
    run_config_file(cfg, folder)
    return cfg, load_experiment(cfg.experiment_dir)


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    phase=st.sampled_from(("render", "embed", "propose", "write", "commit")),
    iteration=st.integers(min_value=0, max_value=2),
    signal_kind=st.sampled_from((KeyboardInterrupt, cli.Terminated)),
    over_old=st.booleans(),
)
def test_interrupted_anywhere_resumes_to_the_uninterrupted_history(
    reference_run,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    phase: str,
    iteration: int,
    signal_kind: type[BaseException],
    over_old: bool,
) -> None:
    from bo_voids.testing.faults import FaultInjector, inject_into_pipelines

    ref_cfg, reference = reference_run
    work = tmp_path_factory.mktemp("interrupted")
    cfg = ref_cfg.replace(experiment_dir=str(work / "exp"))
    path = work / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    args = ["--config", str(path), "--quiet", "--no-report"]
    old: dict[str, bytes | None] = {}
    if over_old:  # an experiment to replace: kept whole until the new iteration 0 exists
        _fake_experiment(ExperimentStore(cfg.experiment_dir))
        old = snapshot(work / "exp")
        args.append("--overwrite")
    outside = {k: v for k, v in snapshot(work).items() if not k.startswith("exp")}
    injector = FaultInjector([(phase, iteration)], _raise(signal_kind))
    with inject_into_pipelines(injector):
        code = optimize.main(args)
    err = capsys.readouterr().err
    if code == 0:
        return  # the point lies beyond the run's end
    assert code == (143 if signal_kind is cli.Terminated else 130), err
    assert "Traceback" not in err
    iteration_0 = (work / "exp" / "iteration_0").is_dir()
    if over_old and not iteration_0:
        now = {k: v for k, v in snapshot(work / "exp").items() if not k.startswith(".lock")}
        assert now == old  # the replaced experiment is back, untouched
        return
    assert not (work / "exp" / REPLACED).exists()
    assert optimize.main([*args[:4], "--resume"]) == 0, capsys.readouterr().err
    run = load_experiment(cfg.experiment_dir)
    assert [it.iteration for it in run.iterations] == [0, 1, 2]
    for a, b in zip(reference.iterations, run.iterations, strict=True):
        assert a.scores == b.scores
        assert [m["params"] for m in a.metadata] == [m["params"] for m in b.metadata]
    assert run.history == reference.history
    assert run.status == "completed"
    assert {k: v for k, v in snapshot(work).items() if not k.startswith("exp")} == outside


@pytest.mark.parametrize("out", ["experiment.json", "history.csv", "iteration_0/scores.json"])
def test_calibrate_never_writes_over_the_experiments_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], out: str
) -> None:
    from bo_voids.calibration.__main__ import main as calibrate_main

    store = ExperimentStore(tmp_path / "exp")
    _fake_experiment(store)
    before = snapshot(tmp_path)
    code = cli.call_guarded(calibrate_main, [str(store.root), "--out", str(store.root / out)])
    err = capsys.readouterr().err
    assert code == 2 and "would overwrite" in err
    assert_one_line_no_traceback(err)
    assert snapshot(tmp_path) == before


def test_a_tracker_failing_mid_run_is_switched_off_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from types import SimpleNamespace

    from bo_voids.tracking import MLflowCallback

    class GoneServer:
        def __getattr__(self, name: str):
            raise ConnectionError("the server went away")

    callback = MLflowCallback(tracking_uri=str(tmp_path / "mlruns"))
    callback._client, callback.run_id = GoneServer(), "run"
    event = SimpleNamespace(iteration=3, config=None, experiment_dir=tmp_path)
    callback(event)  # never raises: tracking must not stop the run
    callback(event)
    warnings_ = [r for r in caplog.records if "MLflow logging stopped" in r.getMessage()]
    assert len(warnings_) == 1 and "iteration 3" in warnings_[0].getMessage()
    callback.finish()  # nothing more is sent to a tracker that failed


def test_an_overwrite_cut_short_while_setting_aside_loses_nothing(
    repo_root: Path, tmp_path: Path
) -> None:
    """A kill between two renames of the set-aside: the next --overwrite completes it."""
    cfg = tiny_config(repo_root, tmp_path)
    store = ExperimentStore(cfg.experiment_dir)
    old = _fake_experiment(store)
    aside = store.root / REPLACED
    aside.mkdir()
    os.replace(store.root / MANIFEST, aside / MANIFEST)  # the manifest went first, then the kill
    with ExperimentLock(store.root):
        store.create(cfg, {"name": "h", "fingerprint": "x"}, overwrite=True)
        assert (aside / "iteration_0").is_dir() and (aside / MANIFEST).is_file()
        assert store.restore_replaced()
    assert {k: v for k, v in snapshot(store.root).items() if not k.startswith(".lock")} == old
