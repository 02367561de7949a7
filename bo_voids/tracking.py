"""Experiment trackers as per-iteration callbacks: :class:`MLflowCallback`.

The pipeline calls every callback after each persisted iteration with an
:class:`~bo_voids.run_events.IterationEvent`; a tracker logs what it needs from it. MLflow is an
optional extra (``pip install -e '.[mlflow]'``, the ``mlflow-skinny`` client)::

    from bo_voids import OptimizationPipeline, load_config
    from bo_voids.tracking import MLflowCallback

    cfg = load_config("configs/quickstart.yaml")
    with MLflowCallback(tracking_uri="file:./mlruns") as mlflow_cb:
        OptimizationPipeline(cfg, overwrite=True, callbacks=[mlflow_cb]).run_full_experiment()

or from the command line: ``bo-voids run --config configs/quickstart.yaml --mlflow``.

What is logged, to one MLflow run per pipeline run:

* **params** — the config, flattened (``bo.top_k``, ``param_bounds.void_count``, …), and the
  embedder's identity (``embedder_info.fingerprint``, …);
* **metrics**, with ``step`` = iteration — the run-level scores (``distribution_similarity``,
  ``best_mmd2``, ``kid``, ``epsilon_ball_share``, ``noise_floor_q05``, …), the
  recommendation's ``recommendation_fresh_mmd2`` and ``recommendation_in_sample_mmd2``, and the
  cumulative seconds per stage (``timings/render``, …);
* **artefacts** — ``plots/*.png`` after every iteration; at :meth:`MLflowCallback.finish` also
  ``report.html``, ``calibration.json``, ``events.jsonl``, ``experiment.json`` and
  ``history.csv``.

The default store is a local folder, ``./mlruns`` (``mlflow ui --backend-store-uri ./mlruns``
shows it), unless ``MLFLOW_TRACKING_URI`` names another. MLflow 3 keeps its file store in
maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; the callback sets that variable for a file
store unless it is already set. Any other URI (``sqlite:///mlflow.db``, ``http://…``) is used
as given.

Time outside the process is bounded: the URI is checked when the callback is built (a malformed
one is a :class:`~bo_voids.exceptions.ConfigError`, exit 2), an HTTP server is probed with a
:data:`PROBE_TIMEOUT` connection attempt at :meth:`MLflowCallback.start` (unreachable:
:class:`~bo_voids.exceptions.TrackerUnavailableError`, which the command line turns into one
warning line), MLflow's own HTTP requests get a short timeout and few retries
(:data:`HTTP_LIMITS`, set unless the environment sets them), and a tracker that fails during the
run is switched off with one warning instead of stopping the run.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from bo_voids.exceptions import ConfigError, TrackerUnavailableError

if TYPE_CHECKING:  # the pipeline calls this module; only its types are needed here
    from bo_voids.run_events import IterationEvent
    from bo_voids.run_scores import RunScores

__all__ = [
    "DEFAULT_STORE",
    "HTTP_LIMITS",
    "PROBE_TIMEOUT",
    "MLflowCallback",
    "check_tracking_uri",
    "flatten_params",
    "iteration_metrics",
    "local_store",
    "probe_tracking_server",
]

logger = logging.getLogger(__name__)

#: The local store used when neither ``tracking_uri`` nor ``MLFLOW_TRACKING_URI`` is given.
DEFAULT_STORE = "mlruns"
#: Longest param value kept (MLflow 2's limit; longer values are cut, with an ellipsis).
_MAX_PARAM_LENGTH = 500
#: Seconds a tracking server has to accept a connection before it counts as unreachable.
PROBE_TIMEOUT = 3.0
#: MLflow's HTTP settings (environment variables), set unless already set: a server that stops
#: answering during a run costs seconds, not the many minutes of MLflow's defaults.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
}
#: URI schemes of MLflow tracking stores (others are refused up front).
_SCHEMES = frozenset(
    {"", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks"}
)
#: Entities per ``log_batch`` call (MLflow's limit for params and tags).
_BATCH = 100
#: Run-level scores logged as metrics (``scores.json`` keys).
_SCORE_METRICS = (
    "distribution_similarity",
    "best_mmd2",
    "best_predicted_mmd2",
    "iteration_best_mmd2",
    "kid",
    "mean_nearest_real",
    "epsilon_ball_share",
    "noise_floor_q05",
    "n_sets",
    "pool_size",
)
#: Files of the experiment folder logged as artefacts at the end (when present).
_FINAL_FILES = (
    "report.html",
    "calibration.json",
    "events.jsonl",
    "experiment.json",
    "history.csv",
    "retarget.json",
)


def flatten_params(value: object, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(dotted.key, text)`` pairs of a nested mapping, for MLflow params.

    Args:
        value: A mapping (e.g. ``ExperimentConfig.to_dict()``), or a leaf.
        prefix: Key prefix of ``value``.

    Yields:
        One pair per leaf; lists become their text.
    """
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from flatten_params(v, f"{prefix}.{k}" if prefix else str(k))
        return
    text = "" if value is None else str(value)
    if len(text) > _MAX_PARAM_LENGTH:
        text = text[: _MAX_PARAM_LENGTH - 1] + "…"
    yield prefix, text


def iteration_metrics(scores: RunScores, timings: Mapping[str, float]) -> dict[str, float]:
    """The finite metrics of one iteration (see the module docstring for the names).

    Args:
        scores: The iteration's run-level scores.
        timings: Cumulative seconds per stage.

    Returns:
        ``{name: value}``; NaN and missing values are left out (MLflow plots them badly).
    """
    out: dict[str, float] = {}
    scalars = scores.scalars()
    for key in _SCORE_METRICS:
        _put(out, key, scalars.get(key))
    rec = scores.recommendation
    _put(out, "recommendation_fresh_mmd2", rec.fresh_mmd2 if rec else None)
    _put(out, "recommendation_in_sample_mmd2", rec.mmd2_in_sample if rec else None)
    for stage, seconds in timings.items():
        _put(out, f"timings/{stage}", seconds)
    return out


def _put(out: dict[str, float], key: str, value: Any) -> None:
    if isinstance(value, bool) or value is None:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        return
    if math.isfinite(v):
        out[key] = v


def check_tracking_uri(uri: str) -> None:
    """Refuse a tracking URI that cannot work, before any work.

    Args:
        uri: The URI (or a folder path for a local file store).

    Raises:
        ConfigError: Malformed (``http://[::1``), an unknown scheme, an HTTP URI without a host
            or with a bad port; the message names the URI (exit 2).
    """
    try:
        parsed = urlparse(uri)
        port = parsed.port  # a bad port raises here
        host = parsed.hostname
    except ValueError as exc:
        raise ConfigError(f"--mlflow: {uri!r} is not a valid tracking URI ({exc})") from exc
    scheme = parsed.scheme.lower()
    if len(scheme) == 1:  # a Windows drive letter: a path
        return
    base = scheme.split("+", 1)[0]
    if base not in _SCHEMES:
        raise ConfigError(
            f"--mlflow: {uri!r} has an unknown scheme {scheme!r}; use a folder, file:, sqlite:, "
            "http: or https:"
        )
    if base in {"http", "https"} and (not host or port == 0):
        raise ConfigError(f"--mlflow: {uri!r} names no server (expected http://HOST[:PORT])")


def local_store(tracking_uri: str | None) -> Path | None:
    """The folder of a local file store (the default ``./mlruns`` too), ``None`` for a server.

    Args:
        tracking_uri: As given to ``--mlflow`` (empty or ``None``: the default store).
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "") or DEFAULT_STORE
    check_tracking_uri(uri)
    scheme = urlparse(uri).scheme
    if len(scheme) == 1 or scheme in {"", "file"}:
        return Path(urlparse(uri).path if scheme == "file" else uri).expanduser()
    return None


def probe_tracking_server(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Check that an HTTP tracking server accepts a connection within ``timeout`` seconds.

    Local stores (folders, ``sqlite:``) are not probed.

    Raises:
        TrackerUnavailableError: The server does not accept the connection in time.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in {"http", "https"} or not parsed.hostname:
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = (
            f"no answer within {timeout:g} s"
            if isinstance(exc, TimeoutError)
            else (exc.strerror or str(exc)).lower()
        )
        raise TrackerUnavailableError(
            f"MLflow tracking server {uri} cannot be reached ({reason})"
        ) from exc


def _resolve_uri(tracking_uri: str | os.PathLike[str] | None) -> str:
    """An explicit URI, else ``MLFLOW_TRACKING_URI``, else the local ``./mlruns`` file store.

    Raises:
        ConfigError: The URI is malformed (:func:`check_tracking_uri`).
    """
    uri = str(tracking_uri) if tracking_uri else os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        uri = DEFAULT_STORE
    check_tracking_uri(uri)
    scheme = urlparse(uri).scheme
    if scheme in {"", "file"}:
        path = Path(urlparse(uri).path if scheme == "file" else uri).expanduser().resolve()
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return path.as_uri()
    return uri


class MLflowCallback:
    """Log a run to MLflow: params, per-iteration metrics, plots and the report.

    Use it as a context manager around the run (the run is ended, with its final artefacts,
    when the block ends: ``FINISHED``, or ``FAILED`` / ``KILLED`` on an exception / Ctrl-C), or
    call :meth:`start` and :meth:`finish` yourself.

    Args:
        tracking_uri: MLflow tracking URI or a folder for a local file store (default:
            ``MLFLOW_TRACKING_URI``, else ``./mlruns``).
        experiment_name: MLflow experiment (default: the config's ``experiment_name``).
        run_name: Name of the MLflow run (default: MLflow's).
        run_id: Continue this existing MLflow run instead of starting one (e.g. on resume).
        tags: Extra tags of the run.
        plots_every_iteration: Log ``plots/*.png`` after every iteration (else at the end only).

    Raises:
        ConfigError: When the URI is malformed; at :meth:`start`, when ``mlflow`` is not
            installed or the store cannot be opened.
        TrackerUnavailableError: At :meth:`start`, when an HTTP server cannot be reached.
    """

    def __init__(
        self,
        tracking_uri: str | os.PathLike[str] | None = None,
        experiment_name: str | None = None,
        *,
        run_name: str | None = None,
        run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        plots_every_iteration: bool = True,
    ) -> None:
        self.tracking_uri = _resolve_uri(tracking_uri)
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.run_id = run_id
        self.tags = dict(tags or {})
        self.plots_every_iteration = plots_every_iteration
        self.experiment_dir: Path | None = None
        self._client: Any = None
        self._params_logged = False
        self._finished = False
        self._failed = False

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, experiment_name: str | None = None) -> str:
        """Open the store and start (or reopen) the MLflow run.

        Args:
            experiment_name: Used when none was given to the constructor.

        Returns:
            The MLflow run id.

        Raises:
            ConfigError: ``mlflow`` is not installed, or the store cannot be opened.
            TrackerUnavailableError: An HTTP tracking server cannot be reached.
        """
        if self._client is not None and self.run_id is not None:
            return self.run_id
        for key, value in HTTP_LIMITS.items():
            os.environ.setdefault(key, value)
        probe_tracking_server(self.tracking_uri)
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise ConfigError(
                "MLflow logging needs the mlflow extra: pip install -e '.[mlflow]' "
                f"(or pip install mlflow-skinny); {exc}"
            ) from exc
        name = self.experiment_name or experiment_name or "bo_voids"
        try:
            client = MlflowClient(tracking_uri=self.tracking_uri)
            if self.run_id is None:
                experiment = client.get_experiment_by_name(name)
                experiment_id = (
                    experiment.experiment_id if experiment else client.create_experiment(name)
                )
                run = client.create_run(experiment_id, tags=self.tags, run_name=self.run_name)
                self.run_id = run.info.run_id
            else:
                client.update_run(self.run_id, status="RUNNING")
        except Exception as exc:  # MLflow raises its own and OS errors for an unusable store
            if urlparse(self.tracking_uri).scheme in {"http", "https"}:
                raise TrackerUnavailableError(
                    f"MLflow tracking server {self.tracking_uri} does not answer: "
                    f"{type(exc).__name__}: {_first_line(exc)}"
                ) from exc
            raise ConfigError(
                f"cannot open the MLflow tracking store {self.tracking_uri}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._client = client
        self.experiment_name = name
        logger.debug("MLflow run %s in %s (%s)", self.run_id, name, self.tracking_uri)
        assert self.run_id is not None
        return self.run_id

    def finish(self, status: str = "FINISHED") -> None:
        """Log the final artefacts and end the run (once; later calls do nothing).

        Args:
            status: ``FINISHED``, ``FAILED`` or ``KILLED``.
        """
        if self._finished or self._failed or self._client is None or self.run_id is None:
            return
        self._finished = True
        if self.experiment_dir is not None:
            self._log_plots()
            for name in _FINAL_FILES:
                path = self.experiment_dir / name
                if path.is_file():
                    self._client.log_artifact(self.run_id, str(path))
        self._client.set_terminated(self.run_id, status=status)

    def __enter__(self) -> MLflowCallback:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        else:
            self.finish("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    # ---- the callback ------------------------------------------------------------------------

    def __call__(self, event: IterationEvent) -> None:
        """Log one persisted iteration (params too, on the first call).

        A failure (the server went away, a store error) switches the tracker off with one
        warning: tracking never stops or slows down the run it observes.
        """
        if self._failed:
            return
        try:
            self._log_iteration(event)
        except Exception as exc:
            self._failed = True
            logger.warning(
                "warning: MLflow logging stopped at iteration %s (%s: %s); the run goes on "
                "without tracking",
                event.iteration,
                type(exc).__name__,
                _first_line(exc),
            )
            logger.debug("MLflow failure", exc_info=True)

    def _log_iteration(self, event: IterationEvent) -> None:
        from mlflow.entities import Metric, Param, RunTag

        config = event.config
        self.start(config.experiment_name)
        client, run_id = self._client, self.run_id
        self.experiment_dir = Path(event.experiment_dir)
        if not self._params_logged:
            params = dict(flatten_params(config.to_dict()))
            embedder = event.embedder
            params.update(flatten_params(dict(embedder), "embedder_info"))
            items = [Param(k, v) for k, v in params.items()]
            for i in range(0, len(items), _BATCH):
                client.log_batch(run_id, params=items[i : i + _BATCH])
            tags = [
                RunTag("bo_voids.experiment_dir", str(self.experiment_dir.resolve())),
                RunTag("bo_voids.embedder_fingerprint", str(embedder.get("fingerprint", ""))),
                RunTag("bo_voids.first_iteration_logged", str(event.iteration)),
            ]
            client.log_batch(run_id, tags=tags)
            self._params_logged = True
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, int(event.iteration))
            for k, v in iteration_metrics(event.scores, event.timings).items()
        ]
        client.log_batch(run_id, metrics=metrics)
        if self.plots_every_iteration:
            self._log_plots()

    def _log_plots(self) -> None:
        assert self.experiment_dir is not None
        plots = self.experiment_dir / "plots"
        for png in sorted(plots.glob("*.png")) if plots.is_dir() else []:
            self._client.log_artifact(self.run_id, str(png), artifact_path="plots")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
