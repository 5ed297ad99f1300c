"""RESULTS.md's sections on seed sweeps, each read from the report `aelab-bench --report <sweep folder> --out DIR`
wrote (BENCHMARK.json in DIR), with the command, budget and machine it names: the disentanglement sweep (the dSprites
presets side by side, every metric as mean ± sample std over seeds, the published ranges beside them) and the
lesson sweep (each headline preset's number as mean ± std over seeds beside RESULTS.md's single-seed row). A section
says so when its report is absent; nothing here runs a job."""

from __future__ import annotations

import json
from pathlib import Path

from aelab.bench_report import cell

REPORT = Path(__file__).resolve().parent / "disentanglement" / "BENCHMARK.json"
LESSON = Path(__file__).resolve().parent / "lesson" / "BENCHMARK.json"
METRICS = (("test/mig", "MIG"), ("test/dci_disentanglement", "DCI disent."), ("test/dci_completeness", "DCI compl."),
           ("test/dci_informativeness", "DCI inform."), ("test/sap", "SAP"), ("test/factorvae_score", "FactorVAE score"),
           ("test/loss", "test loss"))
# What the papers report on dSprites, for the sentence under the table (their budgets are ~300,000 steps of
# batch 64 over the whole grid; read the two side by side with that in mind)
PUBLISHED = ("Published, at far larger budgets (hundreds of thousands of steps on the whole grid): Chen et al. (2018) "
             "report MIG of roughly 0.2–0.4 for β-TCVAE on dSprites, above β-VAE's at the same β; Locatello et al. "
             "(2019), over 50 seeds per setting, find MIG mostly between 0.1 and 0.4 and FactorVAE scores of about "
             "0.6–0.85 for β-VAE, β-TCVAE, FactorVAE and DIP-VAE alike, the spread over seeds as large as the gaps "
             "between models.")


def experiment_of(row: dict) -> str:
    return row["setting"].get("experiment", row["name"])


def read_report(path: Path, benchmark: str) -> tuple[dict | None, dict | list[str]]:
    """(the report, its provenance) of an aelab-bench report, or (None, the lines saying how to record it)."""
    if not path.is_file():
        return None, [f"Not recorded yet: `aelab-bench benchmark={benchmark}`, then `aelab-bench --report <its sweep "
                      f"folder> --out experiments/{path.parent.name}` writes the report this section reads "
                      f"({path.relative_to(path.parents[1])}).", ""]
    report = json.loads(path.read_text())
    return report, report.get("provenance", {})


def disentanglement_section(path: Path = REPORT) -> list[str]:
    out = ["## Disentanglement on dSprites, over seeds", ""]
    report, origin = read_report(path, "disentanglement")
    if report is None:
        return out + origin
    rows = sorted(report["rows"], key=experiment_of)
    shared = {k: v for k, v in rows[0]["setting"].items() if k != "experiment"
              and all(r["setting"].get(k) == v for r in rows)} if rows else {}
    out += [f"{report['succeeded']} of {report['jobs']} jobs succeeded; mean ± sample std over the seeds that "
            "succeeded (n in the seeds column). Written by "
            + written_by(origin)
            + (f" with {', '.join(f'{k}={v}' for k, v in sorted(shared.items()))} for every preset" if shared else "")
            + f"; the whole report: `experiments/disentanglement/BENCHMARK.md`.", "",
            "| preset | seeds | " + " | ".join(h for _, h in METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for row in rows:
        cells = [cell(row["metrics"].get(m), 3) for m, _ in METRICS]
        out.append(f"| {experiment_of(row)} | {len(row['seeds'])} | " + " | ".join(cells) + " |")
    out += ["", provenance_line(origin), "", PUBLISHED + " " + reading(rows), ""]
    return out


def reading(rows: list[dict]) -> str:
    """The measured side of the comparison: where the means fall against the published ranges, and whether the
    models differ by more than the seeds do."""
    def means(metric: str) -> list[float]:
        return [m["mean"] for r in rows if (m := r["metrics"].get(metric)) and m.get("mean") is not None]

    def stds(metric: str) -> list[float]:
        return [m["std"] for r in rows if (m := r["metrics"].get(metric)) and m.get("std") is not None]

    mig, fvae = means("test/mig"), means("test/factorvae_score")
    if not mig:
        return "No run here has a MIG yet."

    def place(values: list[float], low: float, high: float) -> str:
        lo, hi = min(values), max(values)
        where = ("below" if hi < low else "above" if lo > high else "within" if low <= lo and hi <= high
                 else "overlapping")
        return f"{lo:.3f}–{hi:.3f} ({where} {low}–{high})"

    text = f"Here the presets' mean MIG spans {place(mig, 0.1, 0.4)}"
    if fvae:
        text += f" and their mean FactorVAE score {place(fvae, 0.6, 0.85)}"
    spread = stds("test/mig")
    if spread and len(mig) > 1:
        gap, typical = max(mig) - min(mig), sum(spread) / len(spread)
        text += (f"; the gap between the best and the worst preset's mean MIG ({gap:.3f}) is "
                 f"{'smaller' if gap < typical else 'larger'} than a seed's typical standard deviation "
                 f"({typical:.3f})")
    return text + "."


def written_by(origin: dict) -> str:
    """The report's commands (several when it merges runs made in parts); reports written before merging kept one."""
    commands = origin.get("commands") or ([origin["command"]] if origin.get("command") else [])
    return " and ".join(f"`{c}`" for c in commands) or "aelab-bench"


def provenance_line(origin: dict) -> str:
    where = [f"commit {', '.join(origin['commits'])}" if origin.get("commits") else "",
             f"on {'; '.join(origin['machines'])}" if origin.get("machines") else "",
             (f"{origin['span_seconds'] / 60:.0f} min of wall time while its jobs ran"
              + (f" (over its {len(origin['runs'])} runs)" if len(origin["runs"]) > 1 else "") if "runs" in origin
              # a report written before per-run records measured from the first job's start to the last one's end
              else f"{origin['span_seconds'] / 60:.0f} min from the first job's start to the last one's end")
             if origin.get("span_seconds") else ""]
    return "Ran at " + ", ".join(w for w in where if w) + "."


def headline_section(jobs: list, path: Path = LESSON) -> list[str]:
    """Each preset of the lesson sweep: its headline number (test NLL where it has one, else test PSNR and its gap
    to the main baseline) as mean ± sample std over seeds, beside the single-seed row of this RESULTS.md."""
    from experiments.report import main_baseline

    out = ["## Headline numbers over seeds", ""]
    report, origin = read_report(path, "lesson")
    if report is None:
        return out + origin
    single = {j.name: j.metrics for j in jobs if j.state == "succeeded"}
    out += [f"{report['succeeded']} of {report['jobs']} jobs succeeded; mean ± sample std over the seeds that "
            "succeeded, each preset at its own budget. Written by "
            + written_by(origin)
            + "; the whole report: `experiments/lesson/BENCHMARK.md`. The last column is this file's row of the "
            "preset (seed 42) and its difference from the seeds' mean.", "",
            "| preset | seeds | metric | over seeds | main baseline | over seeds − baseline | this file (seed 42) |",
            "|---|---|---|---|---|---|---|"]
    for row in sorted(report["rows"], key=experiment_of):
        name, stats = experiment_of(row), row["metrics"]
        key = "test/nll" if "test/nll" in stats else "test/psnr"
        stat = stats.get(key)
        means = {k: v["mean"] for k, v in stats.items() if v and v.get("mean") is not None}
        base = main_baseline(means) if key == "test/psnr" else None
        gap = (f"{stat['mean'] - base[1]:+.2f}" if base and base[0] and stat and stat.get("mean") is not None
               else "–")
        mine = single.get(name, {}).get(key)
        # the difference itself, not in standard deviations: with two or three seeds the std is too rough a unit
        away = f" ({mine - stat['mean']:+.2f})" if mine is not None and stat and stat.get("mean") is not None else ""
        out.append(f"| {name} | {len(row['seeds'])} | {'NLL (nats)' if key == 'test/nll' else 'PSNR (dB)'} | "
                   f"{cell(stat, 2)} | {f'{base[1]:.2f} ({base[0]})' if base and base[0] else '–'} | {gap} | "
                   f"{'–' if mine is None else f'{mine:.2f}'}{away} |")
    return out + ["", provenance_line(origin), ""]
