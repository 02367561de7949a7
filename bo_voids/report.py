"""A self-contained HTML report of one experiment (``report.html``), written while the run goes on.

The report is one file: the figures are embedded as base64 PNG, the styles are inline, and it
loads nothing from the network, so it opens from disk in any browser and can be mailed or
archived as is. Every value read from the experiment folder is HTML-escaped.

Sections: a status banner ("running — iteration k of N" while the run goes on, "completed" at
the end), header (status, stop reason, embedder, seed, versions), best parameter sets (with the
real distribution's means when the targets are simulated), convergence table, the four figures of
:mod:`bo_voids.plots`, the implied parameter distribution (``calibration.json``, when present),
every evaluated set, timings and the config snapshot.

The figures are the PNG files the pipeline already drew into ``plots/`` (it draws them after every
iteration); a figure is drawn here only when its file is missing or older than the experiment's
manifest (``figures="auto"``). :class:`ReportCallback` rewrites the report after every iteration
from the running pipeline's memory, so a browser pointed at the file shows the run as it goes
(the page reloads itself every :data:`RELOAD_SECONDS` while the run is running).

Command line::

    python -m bo_voids.report experiments/quickstart [--out report.html]

Example:
    >>> from bo_voids.report import write_report
    >>> write_report("experiments/quickstart")  # doctest: +SKIP
    PosixPath('experiments/quickstart/report.html')
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bo_voids.cli import ExitCode
from bo_voids.config import PARAMETER_NAMES
from bo_voids.exceptions import BoVoidsError
from bo_voids.state import (
    MANIFEST,
    ExperimentRun,
    ExperimentStore,
    atomic_write_text,
    load_experiment,
    read_json,
    utc_timestamp,
)

if TYPE_CHECKING:  # the pipeline calls this module; only its types are needed here
    from bo_voids.pipeline import IterationEvent

__all__ = [
    "FIGURE_MODES",
    "RELOAD_SECONDS",
    "REPORT_FILE",
    "ReportCallback",
    "build_report_html",
    "main",
    "write_report",
]

#: File name of the report inside the experiment folder.
REPORT_FILE = "report.html"
#: The implied parameter distribution (``bo_voids.calibration``), shown when present.
CALIBRATION_FILE = "calibration.json"
#: How figures are obtained: ``auto`` reuses ``plots/*.png`` when up to date and draws the others,
#: ``reuse`` embeds whatever PNG exists and never draws, ``draw`` always draws.
FIGURE_MODES = ("auto", "reuse", "draw")
#: While the run is running, the page reloads itself this often (seconds).
RELOAD_SECONDS = 30

_CSS = """
:root { --fg:#1d1d1f; --muted:#5f6368; --line:#d9dde3; --bg:#ffffff; --panel:#f6f8fa;
  --accent:#0072B2; --good:#009E73; --warn:#D55E00; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1240px; margin:0 auto; padding:24px 28px 48px; }
h1 { font-size:26px; margin:0 0 4px; }
h2 { font-size:19px; margin:34px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:15px; margin:18px 0 6px; }
p.sub { color:var(--muted); margin:0 0 16px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(210px,1fr)); gap:10px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px;
  padding:10px 12px; }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .v { font-size:15px; font-weight:600; word-break:break-word; }
.status-completed { color:var(--good); } .status-running { color:var(--accent); }
.status-failed, .status-interrupted { color:var(--warn); }
.banner { border-radius:8px; padding:10px 14px; margin:0 0 16px; font-weight:600;
  border:1px solid var(--line); }
.banner.running { background:#eaf3fb; color:var(--accent); }
.banner.completed { background:#e9f7f1; color:var(--good); }
.banner.failed, .banner.interrupted { background:#fff4ec; color:var(--warn); }
.banner .note { font-weight:400; }
table { border-collapse:collapse; margin:6px 0 12px; font-size:13px; }
th, td { border:1px solid var(--line); padding:4px 8px; text-align:left; vertical-align:top; }
th { background:var(--panel); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums;
  font-family:ui-monospace,Menlo,Consolas,monospace; }
tr.ref td { background:#fff4ec; font-style:italic; }
tr.best td { background:#eef6fb; }
.scroll { overflow-x:auto; }
figure { margin:14px 0 22px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
details { margin:8px 0; } summary { cursor:pointer; font-weight:600; }
pre { background:var(--panel); border:1px solid var(--line); border-radius:6px; padding:10px;
  overflow-x:auto; font-size:12px; }
.note { color:var(--muted); font-size:13px; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
"""

_PLOTS: tuple[tuple[str, str, str], ...] = (
    (
        "latent",
        "Latent space",
        "2-D PCA of every image's embedding (fitted once on iteration 0). Stars: real targets "
        "(dashed: their 2σ ellipse); diamonds / triangles: the close / far seeds; dots: proposed "
        "sets coloured by iteration; rings: the images of the current best sets.",
    ),
    (
        "convergence",
        "Convergence",
        "Per-set MMD² (best so far and per iteration), distribution similarity of the pooled best "
        "sets against the real set's own noise floor and the convergence threshold, mean "
        "nearest-real distance and ε-ball share of each iteration's images.",
    ),
    (
        "image_grid",
        "Real targets and best synthetic images",
        "Top row: real targets. Below: the replications of the best parameter sets, best first.",
    ),
    (
        "parameters",
        "Parameter trajectories",
        "Every evaluated set's value per iteration, coloured by its MMD²; black: the best set so "
        "far; shaded: the real distribution (mean ± 1 sd; for the shape, its probabilities).",
    ),
)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def write_report(
    experiment_dir: str | Path,
    out: str | Path | None = None,
    *,
    figures: str = "auto",
    max_iterations: int | None = None,
) -> Path:
    """Write the self-contained HTML report of an experiment.

    Args:
        experiment_dir: The experiment folder.
        out: Destination file (default ``experiment_dir/report.html``).
        figures: One of :data:`FIGURE_MODES` (default: reuse the up-to-date PNGs).
        max_iterations: The budget shown as ``N`` in "iteration k of N" (default: the config's).

    Returns:
        The path written.

    Raises:
        StateError: If the folder is not an experiment or cannot be read or written.
        ValueError: An unknown ``figures`` mode.
    """
    run = load_experiment(experiment_dir)
    path = Path(out) if out is not None else Path(experiment_dir) / REPORT_FILE
    html_text = build_report_html(run, figures=figures, max_iterations=max_iterations)
    atomic_write_text(path, html_text)
    return path


def build_report_html(
    run: ExperimentRun,
    *,
    figures: str = "auto",
    book: Any = None,
    max_iterations: int | None = None,
) -> str:
    """The report of a loaded run, as one HTML string (see the module docstring).

    Args:
        run: The loaded run (or the running pipeline's view of it).
        figures: One of :data:`FIGURE_MODES`.
        book: The run's :class:`~bo_voids.scoring.ScoreBook` when the caller holds it (a
            running pipeline); rebuilt from the iterations otherwise.
        max_iterations: The budget shown as ``N`` in "iteration k of N" (default: the config's).

    Returns:
        The HTML document.

    Raises:
        ValueError: An unknown ``figures`` mode.
    """
    if figures not in FIGURE_MODES:
        raise ValueError(f"figures must be one of {FIGURE_MODES}, got {figures!r}")
    name = str(run.manifest.get("experiment_name") or run.root.name)
    running = run.manifest.get("status") == "running"
    refresh = f'<meta http-equiv="refresh" content="{RELOAD_SECONDS}">' if running else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        refresh,
        f"<title>bo_voids report — {_e(name)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _header(run, name, max_iterations),
        _best_section(run),
        _convergence_section(run),
        _plots_section(run, figures),
        _calibration_section(run),
        _sets_section(run, book),
        _timings_section(run),
        _settings_section(run),
        f"<footer>Generated by bo_voids.report on {_e(utc_timestamp())} "
        f"from {_e(str(run.root))}.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


class ReportCallback:
    """Per-iteration callback that rewrites ``report.html`` while the run goes on.

    It reads the running pipeline's memory (iterations, score book) instead of the folder, and
    embeds the PNGs the pipeline has just drawn (``figures="reuse"``): nothing is re-scored or
    re-drawn, so a write takes a few milliseconds. The page says "running — iteration k of N";
    :meth:`finish` (or leaving a ``with`` block) writes the final page from the folder, which
    says "completed" (or how the run stopped).

    Args:
        out: Destination file (default ``report.html`` in the experiment folder).

    Example:
        >>> with ReportCallback() as report:  # doctest: +SKIP
        ...     OptimizationPipeline(cfg, callbacks=[report]).run_full_experiment()
    """

    def __init__(self, out: str | Path | None = None) -> None:
        self.out = Path(out) if out is not None else None
        self.path: Path | None = None
        self.experiment_dir: Path | None = None

    def finish(self, status: str = "FINISHED") -> Path | None:
        """Write the final report of the run (nothing when no iteration was persisted).

        Args:
            status: ``FINISHED`` (figures redrawn where ``plots/`` is older than the final
                state), or ``FAILED`` / ``KILLED`` (the PNGs are embedded as they are).

        Returns:
            The path written, or ``None``.
        """
        if self.experiment_dir is None:
            return None
        figures = "auto" if status == "FINISHED" else "reuse"
        self.path = write_report(self.experiment_dir, self.out, figures=figures)
        return self.path

    def __enter__(self) -> ReportCallback:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.finish("FINISHED" if exc_type is None else "FAILED")

    def __call__(self, event: IterationEvent) -> None:
        """Write the report of the iterations persisted so far."""
        root = Path(event.experiment_dir)
        self.experiment_dir = root
        store = ExperimentStore(root)
        run = ExperimentRun(
            root=root,
            manifest=store.read_manifest(),
            config=event.config,
            iterations=list(event.records),
            history=[],
        )
        html_text = build_report_html(
            run,
            figures="reuse",
            book=event.book,
            max_iterations=int(event.max_iterations),
        )
        self.path = self.out or root / REPORT_FILE
        atomic_write_text(self.path, html_text)


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m bo_voids.report") -> int:
    """Command line: ``python -m bo_voids.report EXPERIMENT_DIR [--out PATH] [--redraw]``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).
        prog: The program name shown in the help (``bo-voids report`` from :mod:`bo_voids.cli`).

    Returns:
        The exit status: 0 on success, 2 when the folder is not a readable experiment.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write a self-contained HTML report (report.html) of a bo_voids experiment.",
    )
    parser.add_argument("experiment_dir", help="the experiment folder (holding experiment.json)")
    parser.add_argument(
        "--out", default=None, help="output file (default: EXPERIMENT_DIR/report.html)"
    )
    parser.add_argument(
        "--redraw", action="store_true", help="draw every figure again instead of reusing plots/"
    )
    args = parser.parse_args(argv)
    try:
        path = write_report(
            args.experiment_dir, args.out, figures="draw" if args.redraw else "auto"
        )
    except BoVoidsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    print(f"wrote {path}")
    return ExitCode.OK


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _banner(run: ExperimentRun, max_iterations: int | None) -> str:
    """The status line at the top: where the run stands, in one sentence."""
    m = run.manifest
    status = str(m.get("status", "unknown"))
    done = max(len(run.iterations) - 1, 0)
    n = max_iterations if max_iterations is not None else run.config.max_iterations
    of = f"iteration {done} of {n}" if run.iterations else f"iteration 0 of {n} under way"
    updated = _e(m.get("updated", "?"))
    if status == "running":
        text = f"Running — {of}"
        note = (
            f"updated {updated}; this page reloads every {RELOAD_SECONDS} s while the run goes on"
        )
    elif status == "completed":
        text = f"Completed — {of}"
        note = _e(m.get("stop_reason") or "")
    elif status in {"interrupted", "failed"}:
        text = f"{status.capitalize()} after {of}"
        error = f"{m['error']}; " if m.get("error") else ""
        note = _e(f"{error}completed iterations are kept: continue with --resume")
    else:
        text, note = f"{status.capitalize()} — {of}", ""
    css = status if status in {"running", "completed", "interrupted", "failed"} else ""
    return (
        f'<p class="banner {css}" id="status">{_e(text)}'
        + (f' <span class="note">· {note}</span>' if note else "")
        + "</p>"
    )


def _header(run: ExperimentRun, name: str, max_iterations: int | None = None) -> str:
    m = run.manifest
    emb = m.get("embedder") or {}
    status = str(m.get("status", "unknown"))
    nf = run.noise_floor if run.iterations or m.get("noise_floor") else {}
    last = run.scores[-1] if run.iterations else None
    cards = [
        ("Status", f'<span class="status-{_e(status)}">{_e(status)}</span>'),
        ("Stop reason", _e(m.get("stop_reason") or "—")),
        ("Iterations completed", _e(max(len(run.iterations) - 1, 0))),
        ("Embedder", f"{_e(emb.get('name', '?'))} ({_e(emb.get('dim', '?'))}-d)"),
        ("Embedder fingerprint", f"<code>{_e(emb.get('fingerprint', '—'))}</code>"),
        ("Seed", _e(m.get("seed", "—"))),
        ("Optimizer", _e(_optimizer_label(run))),
        (
            "Targets",
            _e(
                f"images from {run.config.target_image_dir}"
                if run.config.target_image_dir is not None
                else "simulated from the real distribution"
            ),
        ),
        ("Best MMD² (per set)", _e(_fmt(last.best_mmd2 if last else None))),
        ("Distribution similarity", _e(_fmt(last.distribution_similarity if last else None))),
        (
            "Noise floor (real vs real)",
            _e(f"{_fmt(nf.get('mean'))} ± {_fmt(nf.get('std'))} (q95 {_fmt(nf.get('q95'))})")
            if nf
            else "—",
        ),
        ("Convergence threshold", _e(_fmt(run.config.convergence_threshold))),
    ]
    versions = m.get("versions") or {}
    ver = ", ".join(f"{k} {v}" for k, v in versions.items())
    source = m.get("retargeted_from") or {}
    if source:
        cards.append(
            (
                "Re-targeted from",
                _e(f"{source.get('experiment_dir')} (its evaluated sets, re-scored; no rendering)"),
            )
        )
    card_html = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
        for k, v in cards
    )
    return (
        f"<h1>{_e(name)}</h1>"
        + _banner(run, max_iterations)
        + f'<p class="sub">bo_voids calibration report · created {_e(m.get("created", "?"))} · '
        f"updated {_e(m.get('updated', '?'))}</p>"
        f'<div class="cards">{card_html}</div>'
        + (f'<p class="note">Versions: {_e(ver)}</p>' if ver else "")
    )


def _optimizer_label(run: ExperimentRun) -> str:
    cfg = run.config
    if cfg.optimizer == "botorch":
        return f"botorch ({cfg.acquisition_function}, {cfg.bo.surrogate} GP)"
    return str(cfg.optimizer)


def _best_section(run: ExperimentRun) -> str:
    from bo_voids.plots import best_sets

    best = best_sets(run, k=max(1, run.config.bo.top_k))
    source = (
        "the optimiser's final ranking"
        if run.current_best
        else "the last iteration's top-k (the run has not finished)"
    )
    head = ["rank", "set", "iteration", *PARAMETER_NAMES, "raw MMD²", "predicted MMD²"]
    rows: list[tuple[list[str], str]] = []
    for rank, rec in enumerate(best, start=1):
        params = rec.get("params") or {}
        cells = [
            str(rank),
            str(rec.get("param_set_id")),
            _fmt(rec.get("iteration")),
            *(_fmt(params.get(p)) for p in PARAMETER_NAMES),
            _fmt(rec.get("mmd2")),
            _fmt(rec.get("predicted_mmd2")),
        ]
        rows.append((cells, "best" if rank == 1 else ""))
    if run.config.target_image_dir is None:
        try:
            from bo_voids.space import SearchSpace

            means = SearchSpace.from_config(run.config).distribution_means("real")
            rows.append(
                (
                    [
                        "—",
                        "real distribution (mean / mode)",
                        "—",
                        *(_fmt(means.get(p)) for p in PARAMETER_NAMES),
                        "—",
                        "—",
                    ],
                    "ref",
                )
            )
        except Exception:  # a config the space cannot read loses only the reference row
            pass
    body = _table(head, rows) if rows else '<p class="note">No scored parameter set yet.</p>'
    note = (
        '<p class="note">Ranked by ' + _e(source) + ". Raw MMD²: the set's images against the real "
        "targets (unbiased, can be slightly negative); predicted: the optimiser's model estimate."
        + (
            " The italic row is the centre of the real distribution the targets were drawn from."
            if run.config.target_image_dir is None
            else ""
        )
        + "</p>"
    )
    return "<h2>Best parameter sets</h2>" + note + f'<div class="scroll">{body}</div>'


def _convergence_section(run: ExperimentRun) -> str:
    if not run.iterations:
        return '<h2>Convergence</h2><p class="note">No complete iteration yet.</p>'
    nf = run.noise_floor or {}
    head = [
        "iteration",
        "sets",
        "recommendation",
        "its MMD² on fresh images",
        "in sample",
        "iteration best MMD²",
        "distribution similarity (pool, in sample)",
        "one real set: q05 / median / q95",
        "KID",
        "mean nearest-real",
        "ε-share",
    ]
    band = f"{_fmt(nf.get('q05'))} / {_fmt(nf.get('q50'))} / {_fmt(nf.get('q95'))}" if nf else "—"
    rows = []
    for s in run.scores:
        rows.append(
            (
                [
                    _fmt(s.iteration),
                    _fmt(s.n_sets),
                    str(s.best_param_set_id or "—"),
                    _fmt(s.fresh_mmd2),
                    _fmt(s.best_mmd2),
                    _fmt(s.iteration_best_mmd2),
                    _fmt(s.distribution_similarity),
                    band,
                    _fmt(s.kid),
                    _fmt(s.mean_nearest_real),
                    _pct(s.epsilon_ball_share),
                ],
                "",
            )
        )
    return (
        "<h2>Convergence</h2>"
        '<p class="note">The recommendation is the set ranked best (by the model when there is '
        "one); its MMD² on fresh, independently seeded images that no optimiser saw is the number "
        "to trust (the in-sample score of the best of many noisy sets is biased low). The noise "
        "floor is what one parameter set drawn from the targets' own population scores on as "
        "many fresh images; the run stops below its q05. Distribution similarity: MMD² of the "
        "pooled images of the top-k sets (in sample). Iteration 0 scores the close + far "
        "sets.</p>"
        f'<div class="scroll">{_table(head, rows)}</div>'
    )


def _plots_section(run: ExperimentRun, figures: str = "auto") -> str:
    if not run.iterations:
        return ""
    from bo_voids import plots

    makers = {
        "latent": plots.plot_latent,
        "convergence": plots.plot_convergence,
        "image_grid": plots.plot_image_grid,
        "parameters": plots.plot_parameter_trajectories,
    }
    out = ["<h2>Figures</h2>"]
    for key, title, caption in _PLOTS:
        png = _figure_png(run, key, makers[key], figures)
        if isinstance(png, str):
            out.append(f'<h3>{_e(title)}</h3><p class="note">{_e(png)}</p>')
            continue
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f'<figure id="fig-{_e(key)}"><h3>{_e(title)}</h3>'
            f'<img alt="{_e(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return "".join(out)


def _figure_png(run: ExperimentRun, key: str, make: Any, figures: str) -> bytes | str:
    """The PNG of one figure, or the note shown instead of it.

    ``plots/`` holds what the pipeline drew after the last iteration; a file older than the
    manifest (or than ``calibration.json``) predates the state the report shows, so ``auto``
    draws that one again.
    """
    from bo_voids import plots

    path = run.root / "plots" / plots.PLOT_FILES[key]
    if figures != "draw" and path.is_file():
        if figures == "reuse" or _up_to_date(run.root, path):
            try:
                return path.read_bytes()
            except OSError as exc:
                if figures == "reuse":
                    return f"Figure unavailable: {exc}"
    if figures == "reuse":
        return "Figure not drawn yet (plots/ is written after each iteration when plots are on)."
    try:
        fig = make(run)
        try:
            return plots.figure_to_png(fig)
        finally:
            fig.clear()
    except Exception as exc:  # one failing figure must not lose the report
        return f"Figure unavailable: {exc}"


def _up_to_date(root: Path, png: Path) -> bool:
    """Whether ``png`` was written after the manifest and the calibration it may show."""
    try:
        drawn = png.stat().st_mtime_ns
        inputs = [root / MANIFEST, root / CALIBRATION_FILE]
        return all(drawn >= p.stat().st_mtime_ns for p in inputs if p.exists())
    except OSError:
        return False


def _calibration_section(run: ExperimentRun) -> str:
    path = run.root / CALIBRATION_FILE
    if not path.exists():
        return ""
    try:
        data = read_json(path)
    except BoVoidsError as exc:
        return f'<h2>Implied parameter distribution</h2><p class="note">{_e(exc)}</p>'
    body = (
        "".join(f"<h3>{_e(k)}</h3>{_render_value(v)}" for k, v in data.items())
        if isinstance(data, Mapping)
        else _render_value(data)
    )
    population = _population_section(run, data) if isinstance(data, Mapping) else ""
    return (
        f"{population}<h2>Implied parameter distribution</h2>"
        f'<p class="note">From {_e(CALIBRATION_FILE)}.</p>'
        f"<details><summary>Everything in {_e(CALIBRATION_FILE)}</summary>{body}</details>"
    )


def _population_section(run: ExperimentRun, data: Mapping[str, Any]) -> str:
    """ψ with its intervals beside the mixture and the truth, the fresh validation, the plot."""
    pop = data.get("population")
    if not isinstance(pop, Mapping):
        reason = data.get("population_error")
        return (
            f'<h2>Population calibration</h2><p class="note">Not available: {_e(reason)}</p>'
            if reason
            else ""
        )
    psi = pop.get("psi") or {}
    intervals = pop.get("intervals") or {}
    mixture = data.get("implied_distribution") or {}
    truth = pop.get("truth") or {}
    level = _num(pop.get("interval_level"))
    rows = []
    for name, value in psi.items():
        for part, v in value.items():
            lo, hi = (intervals.get(name) or {}).get(part, (math.nan, math.nan))
            rows.append(
                (
                    [
                        f"{name}.{part}",
                        _fmt(v),
                        f"{_fmt(lo)} – {_fmt(hi)}",
                        _fmt((mixture.get(name) or {}).get(part)),
                        _fmt((truth.get(name) or {}).get(part)) if truth else "-",
                    ],
                    "",
                )
            )
    head = ["parameter", "ψ", f"{level:.0%} interval", "mixture", "truth"]
    comp = [
        (
            [
                str(k),
                _fmt(v.get("in_sample_mmd2")),
                _fmt(v.get("in_sample_p")),
                _fmt(v.get("held_out_mmd2")),
                _fmt(v.get("held_out_p")),
                _fmt(v.get("held_out_inside_noise_floor")),
            ],
            "best" if k == "population" else "",
        )
        for k, v in (pop.get("comparison") or {}).items()
    ]
    chead = ["distribution", "in-sample MMD²", "p", "held-out MMD²", "p", "inside null band"]
    errors = pop.get("errors") or {}
    err = "".join(
        f"<li>vs the {_e(ref)} distribution: mean error {_fmt(e.get('mean_error'))}, std "
        f"error {_fmt(e.get('std_error'))} (fractions of the range), shape TV "
        f"{_fmt(e.get('shape_tv'))}</li>"
        for ref, e in errors.items()
    )
    plot = ""
    png = run.root / "plots" / "calibration_marginals.png"
    if png.is_file():
        data64 = base64.b64encode(png.read_bytes()).decode("ascii")
        plot = (
            '<figure id="fig-calibration-marginals"><h3>Implied marginals</h3>'
            f'<img alt="implied marginals" src="data:image/png;base64,{data64}">'
            "<figcaption>ψ (blue, with the interval of its mean), the mixture's implied "
            "distribution (green, dashed), the truth and the realised target sets (red) when "
            "the targets are simulated, the best single point (dotted).</figcaption></figure>"
        )
    return (
        "<h2>Population calibration (ψ)</h2>"
        f'<p class="note">{_e(pop.get("method", ""))}. Intervals: '
        f"{_e(pop.get('interval_method', ''))}. Paste under <code>param_distributions:</code>:"
        f"</p><pre>{_e(pop.get('yaml_snippet', ''))}</pre>"
        f'<div class="scroll">{_table(head, rows)}</div>'
        "<h3>Fresh renders against the targets</h3>"
        f'<div class="scroll">{_table(chead, comp)}</div>'
        + (f"<ul>{err}</ul>" if err else "")
        + plot
    )


def _sets_section(run: ExperimentRun, book: Any = None) -> str:
    if not run.iterations:
        return ""
    if book is None:
        from bo_voids.scoring import score_book_from_iterations
        from bo_voids.space import SearchSpace

        book = score_book_from_iterations(
            SearchSpace.from_config(run.config),
            run.iterations,
            bandwidth=run.config.metric.bandwidth,
            top_k=run.config.bo.top_k,
        )
    sets = list(book.all_sets())
    sets.sort(key=lambda s: (not math.isfinite(s.mmd2), s.mmd2))
    head = ["set", "iteration", "type", *PARAMETER_NAMES, "MMD²", "images"]
    rows = [
        (
            [
                s.uid,
                _fmt(s.first_iteration),
                s.dataset_type,
                *(_fmt((s.params or {}).get(p)) for p in PARAMETER_NAMES),
                _fmt(s.mmd2),
                _fmt(s.n_images),
            ],
            "",
        )
        for s in sets
    ]
    return (
        "<h2>All evaluated parameter sets</h2>"
        f"<details><summary>{len(rows)} sets, sorted by MMD²</summary>"
        f'<div class="scroll">{_table(head, rows)}</div></details>'
    )


def _timings_section(run: ExperimentRun) -> str:
    timings = run.manifest.get("timings")
    if not isinstance(timings, Mapping) or not timings:
        return ""
    total = sum(_num(v) for v in timings.values() if math.isfinite(_num(v)))
    rows = [
        (
            [str(k), _seconds(v), _pct(_num(v) / total if total > 0 else math.nan)],
            "",
        )
        for k, v in timings.items()
    ]
    rows.append((["total", _seconds(total), "100%"], "ref"))
    return "<h2>Timings</h2>" + _table(["stage", "seconds", "share"], rows)


def _settings_section(run: ExperimentRun) -> str:
    config = run.manifest.get("config") or run.config.to_dict()
    emb = run.manifest.get("embedder") or {}
    return (
        "<h2>Run settings</h2>"
        "<details><summary>Config snapshot (experiment.json)</summary>"
        f"<pre>{_e(json.dumps(config, indent=2, default=str))}</pre></details>"
        "<details><summary>Embedder</summary>"
        f"<pre>{_e(json.dumps(emb, indent=2, default=str))}</pre></details>"
    )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float:
    if value is None or value == "" or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fmt(value: Any) -> str:
    """Compact, stable formatting of scores and parameters (``—`` for missing)."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value == 0:
            return "0"
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.3e}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def _seconds(value: Any) -> str:
    v = _num(value)
    return f"{v:.2f}" if math.isfinite(v) else "—"


def _pct(value: Any) -> str:
    v = _num(value)
    return f"{100 * v:.0f}%" if math.isfinite(v) else "—"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _table(head: Sequence[str], rows: Iterable[tuple[Sequence[str], str]]) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = []
    for cells, cls in rows:
        tds = "".join(
            f'<td class="num">{_e(c)}</td>' if _is_number(str(c)) else f"<td>{_e(c)}</td>"
            for c in cells
        )
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _scalar(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return _fmt(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str)
    return _fmt(value)


def _render_value(value: Any, depth: int = 0) -> str:
    """Render arbitrary JSON generically: mappings and record lists as tables, scalars as text."""
    if isinstance(value, Mapping):
        if not value:
            return '<p class="note">(empty)</p>'
        if depth < 2 and all(isinstance(v, Mapping) for v in value.values()):
            # {name: {field: value}}: one row per name
            cols = list(dict.fromkeys(k for v in value.values() for k in v))
            rows = [([str(k), *(_scalar(v.get(c)) for c in cols)], "") for k, v in value.items()]
            return f'<div class="scroll">{_table(["", *map(str, cols)], rows)}</div>'
        rows = [
            (
                [str(k), _scalar(v)],
                "",
            )
            for k, v in value.items()
            if not (isinstance(v, Mapping | list) and depth < 2 and _is_structured(v))
        ]
        nested = "".join(
            f"<h3>{_e(k)}</h3>{_render_value(v, depth + 1)}"
            for k, v in value.items()
            if isinstance(v, Mapping | list) and depth < 2 and _is_structured(v)
        )
        table = _table(["key", "value"], rows) if rows else ""
        return table + nested
    if isinstance(value, list):
        if value and all(isinstance(v, Mapping) for v in value):
            cols = list(dict.fromkeys(k for v in value for k in v))
            rows = [([_scalar(v.get(c)) for c in cols], "") for v in value]
            return f'<div class="scroll">{_table(list(map(str, cols)), rows)}</div>'
        return f"<p>{_e(', '.join(_scalar(v) for v in value))}</p>"
    return f"<p>{_e(_scalar(value))}</p>"


def _is_structured(value: Any) -> bool:
    if isinstance(value, Mapping):
        return bool(value)
    return bool(value) and all(isinstance(v, Mapping) for v in value)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
