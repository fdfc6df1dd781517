"""The one-page report (`nascli report`): one self-contained HTML file a person can send to a
colleague. It says what was searched, on what data, for how long, what won and by how much, and
whether that beats the hand design beyond noise on the proxy and on test, with the winner drawn.

Self-contained: every figure is a PNG embedded as a data URI, the CSS and the few lines of script
that sort the tables are inline, nothing is fetched. The page is built in memory from read-only
views of the runs (a run in progress shows what is done; a moved run shows where its files were)
and written in one step, so a damaged run database stops it with one line and writes nothing.
Figures come from report.py, drawing.py and each method's `panels` (methods/base.py)."""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
import time
from pathlib import Path

from .errors import NascliError
from .store import RunStore

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin-top:22px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}th.sorted-asc::after{content:" \\25B2"}
th.sorted-desc::after{content:" \\25BC"}td.text{text-align:left;white-space:normal}
tr.control{background:#fff7e0}tr.rescored td:first-child{font-weight:600}tr.failed{color:#a33}
.verdict{padding:8px 12px;border-left:4px solid #888;background:#f7f7f7;margin:8px 0}
.verdict.win{border-color:#2a7}.verdict.none{border-color:#c63}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}dt{color:#555}dd{margin:0}
img{max-width:100%;height:auto;border:1px solid #eee}figure{margin:10px 0}figcaption{color:#555;font-size:12px}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}.muted{color:#777}
"""

#: Click a header to sort its table by that column (numbers by value, `data-v` when given).
_SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var col = th.cellIndex, body = th.closest("table").tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var asc = !th.classList.contains("sorted-asc");
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
    th.classList.add(asc ? "sorted-asc" : "sorted-desc");
    function key(row) {
      var cell = row.cells[col], v = cell.getAttribute("data-v"), text = v === null ? cell.textContent : v;
      var n = parseFloat(text);
      return isNaN(n) ? text : n;
    }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (typeof x !== typeof y) { return typeof x === "number" ? -1 : 1; }
      return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def write_report(runs, out) -> dict:
    """Builds the page for `runs` and writes it to `out` (atomically). Returns the path and what the
    page says: per run the proxy verdict, the test verdict and the number of trial rows."""
    runs = [Path(r) for r in runs]
    with tempfile.TemporaryDirectory(prefix="nascli-report-") as scratch:
        page, said = build_page(runs, Path(scratch))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return {"report": str(out), "bytes": out.stat().st_size, "runs": said}


def build_page(runs: list[Path], scratch: Path) -> tuple[str, list[dict]]:
    """The HTML text and, per run, what its sections concluded. Figures are drawn into `scratch`."""
    from .report import compare, compare_figure

    views = [read_run(run) for run in runs]  # every run read before anything is drawn: a bad one stops it here
    parts = [f"<h1>nascli report: {_e(', '.join(v['name'] for v in views))}</h1>",
             f"<p class='muted'>written {time.strftime('%Y-%m-%d %H:%M')} from {len(views)} run(s)</p>"]
    if len(views) > 1:
        parts.append(_overview(views, scratch))
    compared = compare(runs)
    for k, view in enumerate(views):
        parts.append(_run_section(view, compared, scratch / f"run{k}"))
    if len(views) > 1 and compared["rows"]:
        figure = compare_figure(compared, scratch / "compare-all.png")
        parts.append("<h2>All runs: retrained architectures</h2>" + _retrained_table(compared["architectures"], True)
                     + _figure(figure, "test AP against FLOPs over every run's promoted architectures, and proxy "
                                       "reward against test AP per run"))
    said = [{"run": v["path"], "trials": len(v["trials"]), "proxy_verdict": v["summary"]["verdict"]["text"],
             "test_verdict": compared["test_verdict"][v["path"]]["text"] if v["retrained"] else None}
            for v in views]
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>nascli report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}<script>{_SORT_SCRIPT}</script></body></html>")
    return page, said


def read_run(run: Path) -> dict:
    """Everything the page shows of one run, read through a read-only connection."""
    from .protocol import summarize

    store = RunStore(run, create=False, readonly=True)
    try:
        summary = summarize(store, top=10**9)
        trials, scores, retrained = store.trials(), store.scores(), store.retrained()
    finally:
        store.close()
    spec = run / "spec.yaml"
    return {"path": str(run), "name": str(run), "summary": summary, "trials": trials, "scores": scores,
            "retrained": retrained, "spec": spec.read_text() if spec.is_file() else None}


# ---------------------------------------------------------------- sections


def _run_section(view: dict, compared: dict, scratch: Path) -> str:
    from .report import compare_figure, reward_figure

    scratch.mkdir(parents=True)
    s = view["summary"]
    parts = [f"<h2>{_e(s.get('method', '?'))} run {_e(view['name'])}</h2>", _about(view)]
    parts.append("<h3>Verdict on the proxy</h3>" + _verdict_box(s["verdict"]["text"], s["verdict"]["beats_control"]))
    if view["retrained"]:
        run_archs = [a for a in compared["architectures"] if a["run"] == view["path"]]
        verdict = compared["test_verdict"][view["path"]]
        fidelity = compared["fidelity"][view["path"]]
        parts.append("<h3>Verdict on test (retrained)</h3>" + _verdict_box(verdict["text"], verdict["beats_control"]))
        parts.append(_retrained_table(run_archs, False) + _fidelity(fidelity))
        sub = {**compared, "architectures": run_archs, "fidelity": {view["path"]: fidelity}}
        parts.append(_figure(compare_figure(sub, scratch / "compare.png"),
                             "left: test AP (mean ± std over seeds) against FLOPs, the Pareto front joined; "
                             "right: proxy reward against test AP"))
    else:
        parts.append("<p class='muted'>Not retrained yet: <code>nascli retrain RUN --val TEST.json</code> promotes "
                     "the winners and the control and gives the verdict on test.</p>")
    parts.append("<h3>Rewards</h3>" + _figure(reward_figure(view["path"], scratch / "rewards.png"),
                                              "every finished trial's reward, the best so far, and the control's "
                                              "mean with the proxy's seed noise as a band"))
    parts.append("<h3>Trials</h3>" + _trial_table(view))
    parts.append("<h3>Architectures</h3>" + _drawings(view, scratch))
    parts.append(_panels(view, scratch))
    return "".join(parts)


def _about(view: dict) -> str:
    """What was searched, on what data, with which proxy, for how long."""
    s, trials = view["summary"], view["trials"]
    done = [t for t in trials if t.id > 0 and t.status != "pending"]
    seconds = sum(t.metrics.get("seconds") or 0 for t in done)
    started = min((t.created for t in trials), default=None)
    ended = max((t.finished for t in trials if t.finished), default=None)
    pending = sum(t.status == "pending" for t in trials)
    cache = s.get("cache")
    found = locate(cache, Path(view["path"])) if cache else None
    items = [("run folder", view["path"]), ("method", s.get("method")), ("space", s.get("space")),
             ("proxy spec", s.get("proxy")),
             ("feature / image cache", f"{cache}" + ("" if found or not cache else "  (not found from here)")),
             ("cache contents", _cache_line(found) if found else "—"),
             ("search seed", s.get("seed")),
             ("trials", f"{s['finished']} of {s.get('trials')} finished, {s['failed']} failed"
                        + (f", {pending} still pending (in progress or interrupted)" if pending else "")),
             ("trial compute", f"{seconds / 60:.1f} min summed over trials"),
             ("wall clock", f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(started))} to "
                            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(ended))}" if started and ended else "—"),
             ("proxy seed noise", "—" if s["noise"] is None else
              f"{s['noise']:.4f} (pooled std of the re-scored genotypes' rewards over seeds)")]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items)
    spec = (f"<details><summary>proxy spec (spec.yaml)</summary><pre>{_e(view['spec'])}</pre></details>"
            if view["spec"] else "<p class='muted'>spec.yaml is missing from the run folder.</p>")
    return f"<dl>{dl}</dl>{spec}"


def locate(path: str, run: Path) -> Path | None:
    """A file a run database names, found from here: as given (relative paths are relative to where
    the search ran), else under a folder above the run (the project the run was moved with)."""
    given = Path(path)
    if given.is_file():
        return given
    if not given.is_absolute():
        for above in run.resolve().parents:
            if (above / given).is_file():
                return above / given
    return None


def _cache_line(cache) -> str:
    from .cache.read import describe

    try:
        d = describe(cache)
    except (NascliError, OSError) as e:
        return f"unreadable: {e}"
    splits = ", ".join(f"{name} {v['samples']} crops of {v['images']} images" for name, v in d["splits"].items())
    sources = "; ".join(f"{k} {v}" for k, v in d.get("sources", {}).items() if isinstance(v, str))
    return (f"levels {', '.join(map(str, d['levels']))}; crop {d['crop']} px; classes {', '.join(map(str, d['classes']))}; "
            f"{splits}" + (f"; built from {sources}" if sources else ""))


def _verdict_box(text: str, beats) -> str:
    kind = "win" if beats else "none" if beats is False else ""
    return f"<div class='verdict {kind}'>{_e(text)}</div>"


def _trial_table(view: dict) -> str:
    """Every trial: the control first (marked), re-scored rows marked with their mean ± std, failed
    rows with their reason, pending rows as such."""
    scores, columns = view["scores"], ["trial", "status", "reward", "re-scored mean", "± std", "seeds", "params",
                                       "MFLOPs", "seconds", "note"]
    from .stats import mean_std

    rows = []
    for t in view["trials"]:
        extra = [r for r in scores.get(t.id, {}).values() if r is not None]
        mean, std = mean_std(extra) if extra else (None, None)
        kind = "control" if t.id == 0 else "failed" if t.status == "failed" else "rescored" if extra else ""
        note = ("control (hand design)" if t.id == 0 else t.metrics.get("reason") or "")
        flops = t.metrics.get("flops")
        cells = [("control" if t.id == 0 else t.id, t.id), (t.status, None), _num(t.reward, 4), _num(mean, 4),
                 _num(std, 4), (len(extra) or "", len(extra)), _num(t.metrics.get("params"), 0),
                 _num(flops / 1e6 if flops else None, 2), _num(t.metrics.get("seconds"), 1), (note, None)]
        rows.append((kind, cells))
    return _table(columns, rows, text_columns={9}, row_class="trial")


def _retrained_table(archs: list[dict], several: bool) -> str:
    from .retrain import point_label

    def pct(v):
        return (None, None) if v is None else ("n/a", -1) if v < 0 else (f"{100 * v:.1f}", v)

    columns = (["run"] if several else []) + ["architecture", "proxy reward", "grid (lr: meta-val AP)", "chosen",
                                              "seeds", "test AP", "± std", "AP50", "params M", "GFLOPs",
                                              "ms/img", "train min", "status"]
    rows = []
    for a in archs:
        done = a["status"] == "done"
        grid = " ".join(f"{label}: {'x' if v is None else f'{100 * v:.1f}'}" for label, v in sorted(a["grid"].items()))
        cells = ([(Path(a["run"]).name, None)] if several else []) + [
            (a["arch"] + (" (Pareto)" if a.get("pareto") else ""), None), _num(a["reward"], 4), (grid, None),
            ("" if a["lr"] is None else point_label(a["optimizer"], a["lr"]), a["lr"]), (a["seeds"], a["seeds"]),
            pct(a.get("AP")) if done else ("", None), _num(100 * a["AP_std"] if done and a["AP_std"] else None, 1),
            pct(a.get("AP50")) if done else ("", None), _num(a["params"] / 1e6 if done else None, 2),
            _num(a["flops"] / 1e9 if done else None, 3), _num(a.get("latency_ms") if done else None, 0),
            _num(a["minutes"], 1), (a["status"] + (f": {a['reason']}" if a["reason"] else ""), None)]
        rows.append(("control" if a["arch"] == "baseline" else "failed" if a["status"] == "failed" else "", cells))
    return _table(columns, rows, text_columns={len(columns) - 1}, row_class="retrained")


def _fidelity(f: dict) -> str:
    if f["kendall_tau"] is None:
        return (f"<p class='muted'>Proxy fidelity needs 3 or more retrained architectures with a proxy reward "
                f"(this run has {f['n']}).</p>")
    interval = _tau_interval(f)
    costs = ", ".join(f"{k} {v:.3f}" for k, v in (f.get("baselines") or {}).items())
    return (f"<p>Proxy fidelity over {f['n']} architectures: Kendall τ {f['kendall_tau']:.3f}"
            f"{interval}, Spearman ρ {f['spearman_rho']:.3f}."
            + (f" Ranking them by cost alone (more = better), Kendall τ: {html.escape(costs)}." if costs else "")
            + "</p>")


def _tau_interval(f: dict) -> str:
    """τ's bootstrap 90 % interval, which compare gives from 5 architectures on."""
    if not f.get("tau_interval"):
        return ""
    lo, hi = f["tau_interval"]
    return f" (90 % bootstrap interval {lo:.2f} to {hi:.2f})"


def _drawings(view: dict, scratch: Path) -> str:
    """The control's architecture, each promoted one's, and the search's best when none is promoted."""
    from .drawing import draw_genotype
    from .spaces import load_genotype

    wanted: dict[str, str] = {}
    control = next((t for t in view["trials"] if t.id == 0), None)
    if control is not None:
        wanted["control"] = control.genotype
    for r in view["retrained"]:
        arch = r["metrics"].get("arch", r["name"])
        if arch != "baseline":  # the control, drawn above
            wanted.setdefault(arch, r["genotype"])
    top = view["summary"]["top"]
    if len(wanted) <= 1 and top:
        wanted[f"trial-{top[0]['trial']} (the search's best)"] = top[0]["genotype"]
    out = []
    for k, (name, text) in enumerate(wanted.items()):
        try:
            genotype = load_genotype(json.loads(text), f"{view['path']}: {name}")
            path = draw_genotype(genotype, scratch / f"arch-{k}.png", f"{view['name']}: {name}")
        except (NascliError, ValueError) as e:
            out.append(f"<p class='muted'>{_e(name)}: no drawing ({_e(e)})</p>")
            continue
        out.append(_figure(path, name))
    return "".join(out) or "<p class='muted'>No architecture to draw yet.</p>"


def _panels(view: dict, scratch: Path) -> str:
    """The method's own results (SP-NAS's trajectory, Auto-FPN's decoded ops per epoch, ...)."""
    from .methods import lookup

    method = view["summary"].get("method")
    if not method:
        return ""
    try:
        panels = lookup(method, view["summary"].get("space")).panels
    except NascliError:
        return ""
    if panels is None:
        return ""
    shown = panels(Path(view["path"]), scratch)
    parts = [f"<h3>{_e(method)}: its own results</h3>"]
    parts += [f"<div class='verdict none'>{_e(line)}</div>" for line in shown.get("notes", [])]
    for title, (columns, rows) in shown.get("tables", {}).items():
        parts.append(f"<p>{_e(title)}</p>" + _table(columns, [("", [(c, None) for c in r]) for r in rows], set(),
                                                    "panel"))
    for title, path in shown.get("figures", {}).items():
        parts.append(_figure(path, title))
    return "".join(parts) if len(parts) > 1 else ""


def _overview(views: list[dict], scratch: Path) -> str:
    """Several runs: one row each and their best-so-far curves on shared axes per reward kind."""
    columns = ["run", "method", "finished", "failed", "compute min", "best re-scored mean", "control mean",
               "proxy verdict"]
    rows = []
    for v in views:
        s = v["summary"]
        best = next((t for t in s["top"] if t["mean"] is not None), None)
        seconds = sum(t.metrics.get("seconds") or 0 for t in v["trials"] if t.id > 0)
        rows.append(("", [(v["name"], None), (s.get("method"), None), (s["finished"], s["finished"]),
                          (s["failed"], s["failed"]), _num(seconds / 60, 1), _num(best and best["mean"], 4),
                          _num(s["control"] and s["control"]["mean"], 4), (s["verdict"]["text"], None)]))
    return ("<h2>Runs side by side</h2>" + _table(columns, rows, {7}, "overview")
            + _figure(_best_so_far_figure(views, scratch / "best-so-far.png"),
                      "best reward so far against the trial number, one line per run (runs whose rewards are "
                      "of different kinds are drawn on separate axes)"))


def _best_so_far_figure(views: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .report import reward_label

    kinds: dict[str, list] = {}
    for v in views:
        kinds.setdefault(reward_label(v["path"]), []).append(v)
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for ax, (label, group) in zip(axes[0], kinds.items()):
        for k, v in enumerate(group):
            done = [(t.id, t.reward) for t in v["trials"] if t.id > 0 and t.status == "done"]
            if done:
                ids, rewards = zip(*done)
                ax.plot(ids, [max(rewards[:i + 1]) for i in range(len(rewards))], color=f"C{k}",
                        label=f"{v['name']} ({v['summary'].get('method')})")
            control = v["summary"]["control"]
            if control and control["mean"] is not None:
                ax.axhline(control["mean"], color=f"C{k}", lw=0.8, ls="--")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"best so far: {label}")
        ax.legend(fontsize=8, title="dashed: each run's control", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# ---------------------------------------------------------------- HTML pieces


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits: int) -> tuple:
    """(shown text, sort value) of a number; blank when missing."""
    if value is None:
        return "", None
    return (f"{value:,.{digits}f}" if digits == 0 else f"{value:.{digits}f}"), value


def _table(columns: list[str], rows: list[tuple[str, list]], text_columns: set, row_class: str) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for kind, cells in rows:
        tds = []
        for k, (shown, value) in enumerate(cells):
            cls = " class='text'" if k in text_columns else ""
            data = "" if value is None or isinstance(value, str) else f" data-v='{value!r}'"
            tds.append(f"<td{cls}{data}>{_e(shown)}</td>")
        body.append(f"<tr class='{row_class} {kind}'>{''.join(tds)}</tr>")
    return f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img alt='{_e(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")
