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
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bo_voids._html import e as _e
from bo_voids._html import fmt as _fmt
from bo_voids._html import num as _num
from bo_voids._html import pct as _pct
from bo_voids._html import seconds as _seconds
from bo_voids._html import table as _table
from bo_voids.cli import ExitCode
from bo_voids.config import PARAMETER_NAMES
from bo_voids.exceptions import BoVoidsError
from bo_voids.report_calibration import CALIBRATION_FILE, calibration_section
from bo_voids.state import (
    MANIFEST,
    ExperimentRun,
    ExperimentStore,
    atomic_write_text,
    load_experiment,
    utc_timestamp,
)

if TYPE_CHECKING:  # the pipeline calls this module; only its types are needed here
    from bo_voids.run_events import IterationEvent

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
        "Every evaluated set's value per iteration, coloured by its MMD²; black: the "
        "recommendation (the set the run ranked best after each iteration); shaded: the real "
        "distribution (mean ± 1 sd; for the shape, its probabilities).",
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
    max_iterations: int | None = None,
) -> str:
    """The report of a loaded run, as one HTML string (see the module docstring).

    Args:
        run: The loaded run (or the running pipeline's view of it).
        figures: One of :data:`FIGURE_MODES`.
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
        calibration_section(run),
        _sets_section(run),
        _timings_section(run),
        _settings_section(run),
        f"<footer>Generated by bo_voids.report on {_e(utc_timestamp())} "
        f"from {_e(str(run.root))}.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


class ReportCallback:
    """Per-iteration callback that rewrites ``report.html`` while the run goes on.

    It reads the running pipeline's memory (iterations and their scores) instead of the folder, and
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
    status = run.status  # a "running" left by a crashed run reads "interrupted"
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
    elif status in {"interrupted", "failed"} and not run.iterations:
        text = f"{status.capitalize()} during iteration 0"
        error = f"{m['error']}; " if m.get("error") else ""
        note = _e(f"{error}no iteration was completed: run again with --resume")
    elif status in {"interrupted", "failed"}:
        text = f"{status.capitalize()} after {of}"
        error = f"{m['error']}; " if m.get("error") else ""
        stale = " (the run stopped without saying so)" if m.get("status") == "running" else ""
        note = _e(
            f"{error}iterations 0–{done} are kept{stale}: resume with bo-voids run --config "
            f"CONFIG --experiment-dir {run.root} --resume"
        )
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
    status = run.status
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
    from bo_voids.run_sets import best_sets, ranking_score_label

    best = best_sets(run, k=max(1, run.config.bo.top_k))
    final = run.manifest.get("status") == "completed" and bool(run.current_best)
    source = (
        "the run's final ranking (current_best in experiment.json)"
        if final
        else "the last iteration's ranking (the run has not finished)"
    )
    score_label = ranking_score_label(run)
    head = [
        "rank",
        "set",
        "iteration",
        *PARAMETER_NAMES,
        "raw MMD²",
        *([score_label] if score_label else []),
    ]
    rows: list[tuple[list[str], str]] = []
    for rank, rec in enumerate(best, start=1):
        params = rec.get("params") or {}
        cells = [
            str(rank),
            str(rec.get("param_set_id")),
            _fmt(rec.get("iteration")),
            *(_fmt(params.get(p)) for p in PARAMETER_NAMES),
            _fmt(rec.get("mmd2")),
            *([_fmt(rec.get("predicted_mmd2"))] if score_label else []),
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
                        *(["—"] if score_label else []),
                    ],
                    "ref",
                )
            )
        except Exception:  # a config the space cannot read loses only the reference row
            pass
    body = (
        _table(head, rows, table_id="best-sets")
        if rows
        else '<p class="note">No scored parameter set yet.</p>'
    )
    if score_label is None:
        ranked_by = "Ranked by the raw MMD² (no model ranked the sets)."
    elif "summary distance" in score_label:
        ranked_by = (
            "Ranked by the composite model: its predicted squared distance between a set's mean "
            "embedding summary and the targets' (lower is closer). That distance is in summary "
            "units, not on the MMD² scale; the model pools every replicate and neighbouring set, "
            "so its order is steadier than the raw MMD² of three images, which is why a set with "
            "a lower raw MMD² can rank below another."
        )
    else:
        ranked_by = (
            "Ranked by the model's predicted MMD² (its posterior mean, which pools neighbouring "
            "sets), so a set with a lower raw MMD² can rank below another."
        )
    note = (
        f'<p class="note">{_e(ranked_by)} Order: {_e(source)}. Raw MMD²: the set\'s images '
        "against the real targets (unbiased, can be slightly negative)."
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


def _sets_section(run: ExperimentRun) -> str:
    """Every evaluated set with the MMD² the run scored it with (read, never re-scored)."""
    if not run.iterations:
        return ""
    from bo_voids.run_sets import set_summaries

    sets = [s for s in set_summaries(run) if s.dataset_type != "real"]
    sets.sort(key=lambda s: (not math.isfinite(s.mmd2), s.mmd2))
    head = ["set", "iteration", "type", *PARAMETER_NAMES, "MMD²", "images"]
    rows = [
        (
            [
                s.param_set_id,
                _fmt(s.iteration),
                s.dataset_type,
                *(_fmt((s.params or {}).get(p)) for p in PARAMETER_NAMES),
                _fmt(s.mmd2),
                _fmt(len(s.images)),
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


if __name__ == "__main__":  # pragma: no cover
    from bo_voids.cli import run_module

    run_module(main)
