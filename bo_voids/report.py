"""A self-contained HTML report of one experiment (``report.html``).

The report is one file: the figures are embedded as base64 PNG, the styles are inline, and it
loads nothing from the network, so it opens from disk in any browser and can be mailed or
archived as is. Every value read from the experiment folder is HTML-escaped.

Sections: header (status, stop reason, embedder, seed, versions), best parameter sets (with the
real distribution's means when the targets are simulated), convergence table, the four figures of
:mod:`bo_voids.plots`, the implied parameter distribution (``calibration.json``, when present),
every evaluated set, timings and the config snapshot.

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bo_voids.config import PARAMETER_NAMES
from bo_voids.exceptions import BoVoidsError
from bo_voids.state import ExperimentRun, atomic_write_text, load_experiment, read_json

__all__ = ["REPORT_FILE", "build_report_html", "main", "write_report"]

#: File name of the report inside the experiment folder.
REPORT_FILE = "report.html"
#: Optional file with the implied parameter distribution (a later feature), shown when present.
CALIBRATION_FILE = "calibration.json"

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
.status-failed { color:var(--warn); }
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


def write_report(experiment_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the self-contained HTML report of an experiment.

    Args:
        experiment_dir: The experiment folder.
        out: Destination file (default ``experiment_dir/report.html``).

    Returns:
        The path written.

    Raises:
        StateError: If the folder is not an experiment or cannot be read or written.
    """
    run = load_experiment(experiment_dir)
    path = Path(out) if out is not None else Path(experiment_dir) / REPORT_FILE
    atomic_write_text(path, build_report_html(run))
    return path


def build_report_html(run: ExperimentRun) -> str:
    """The report of a loaded run, as one HTML string (see the module docstring).

    Args:
        run: The loaded run.

    Returns:
        The HTML document.
    """
    name = str(run.manifest.get("experiment_name") or run.root.name)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>bo_voids report — {_e(name)}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _header(run, name),
        _best_section(run),
        _convergence_section(run),
        _plots_section(run),
        _calibration_section(run),
        _sets_section(run),
        _timings_section(run),
        _settings_section(run),
        f"<footer>Generated by bo_voids.report on {_e(_now())} from {_e(str(run.root))}.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m bo_voids.report EXPERIMENT_DIR [--out PATH]``.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 when the folder is not a readable experiment.
    """
    parser = argparse.ArgumentParser(
        prog="python -m bo_voids.report",
        description="Write a self-contained HTML report (report.html) of a bo_voids experiment.",
    )
    parser.add_argument("experiment_dir", help="the experiment folder (holding experiment.json)")
    parser.add_argument(
        "--out", default=None, help="output file (default: EXPERIMENT_DIR/report.html)"
    )
    args = parser.parse_args(argv)
    try:
        path = write_report(args.experiment_dir, args.out)
    except BoVoidsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _header(run: ExperimentRun, name: str) -> str:
    m = run.manifest
    emb = m.get("embedder") or {}
    status = str(m.get("status", "unknown"))
    nf = run.noise_floor if run.iterations or m.get("noise_floor") else {}
    last = run.scores[-1] if run.iterations else {}
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
        ("Best MMD² (per set)", _e(_fmt(last.get("best_mmd2")))),
        ("Distribution similarity", _e(_fmt(last.get("distribution_similarity")))),
        (
            "Noise floor (real vs real)",
            _e(f"{_fmt(nf.get('mean'))} ± {_fmt(nf.get('std'))} (q95 {_fmt(nf.get('q95'))})")
            if nf
            else "—",
        ),
        ("Convergence threshold", _e(_fmt(run.config.convergence_threshold))),
    ]
    card_html = "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
        for k, v in cards
    )
    versions = m.get("versions") or {}
    ver = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (
        f"<h1>{_e(name)}</h1>"
        f'<p class="sub">bo_voids calibration report · created {_e(m.get("created", "?"))} · '
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
    floor = f"{_fmt(nf.get('mean'))} ± {_fmt(nf.get('std'))}" if nf else "—"
    head = [
        "iteration",
        "sets",
        "best MMD² (so far)",
        "best set",
        "iteration best MMD²",
        "distribution similarity",
        "noise floor (mean ± sd)",
        "noise q95",
        "KID",
        "mean nearest-real",
        "ε-share",
    ]
    rows = []
    for i, s in enumerate(run.scores):
        rows.append(
            (
                [
                    _fmt(s.get("iteration", i)),
                    _fmt(s.get("n_sets")),
                    _fmt(s.get("best_mmd2")),
                    str(s.get("best_param_set_id", "—")),
                    _fmt(s.get("iteration_best_mmd2")),
                    _fmt(s.get("distribution_similarity")),
                    floor,
                    _fmt(nf.get("q95")),
                    _fmt(s.get("kid")),
                    _fmt(s.get("mean_nearest_real")),
                    _pct(s.get("epsilon_ball_share")),
                ],
                "",
            )
        )
    return (
        "<h2>Convergence</h2>"
        '<p class="note">Distribution similarity: MMD² of the pooled images of the current top-k '
        "sets against the real targets; the run converges below the threshold or inside the real "
        "set's own noise floor (q95). Iteration 0 scores the close + far seeds.</p>"
        f'<div class="scroll">{_table(head, rows)}</div>'
    )


def _plots_section(run: ExperimentRun) -> str:
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
        try:
            fig = makers[key](run)
            png = plots.figure_to_png(fig)
            fig.clear()
        except Exception as exc:  # one failing figure must not lose the report
            out.append(f'<h3>{_e(title)}</h3><p class="note">Figure unavailable: {_e(exc)}</p>')
            continue
        data = base64.b64encode(png).decode("ascii")
        out.append(
            f'<figure id="fig-{_e(key)}"><h3>{_e(title)}</h3>'
            f'<img alt="{_e(title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
    return "".join(out)


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
    return (
        "<h2>Implied parameter distribution</h2>"
        f'<p class="note">From {_e(CALIBRATION_FILE)}.</p>{body}'
    )


def _sets_section(run: ExperimentRun) -> str:
    if not run.iterations:
        return ""
    from bo_voids.plots import set_summaries

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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
