"""aelab-bench: a named benchmark (conf/benchmark/) runs as one Hydra multirun, resumes when run again, and reports
every model x dataset as mean +- std over its seeds.

    aelab-bench benchmark=mnist_families                          # run; the same command again runs only what
                                                                  # did not succeed (sweep_resume=true)
    aelab-bench benchmark=mnist_families hydra/launcher=parallel  # any launcher, any aelab-train override
    aelab-bench benchmark=mnist_families model=ae_conv,wae seed=0  # a narrower grid, into the same folder
    aelab-bench --report outputs/bench/mnist_families             # the report of what a folder holds now
    aelab-bench --report DIR --out experiments/lesson --merge     # add DIR's jobs to the report there, keeping
                                                                  # the jobs it holds that DIR does not
    aelab-bench --list                                            # the named benchmarks

A benchmark file is an aelab-train config: the grid in `hydra.sweeper.params`, the common budget (`epochs`), the
sweep folder. Its jobs live in folders named by their overrides (`data=mnist,model=wae,seed=1`), so a job keeps its
folder whatever the grid around it, and a finished one is skipped only when its recorded config is the one asked for
(aelab.sweep_resume). The report (aelab.bench_report) is written after every run, also when jobs failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aelab.cli import entry
from aelab.config import CONFIG_DIR
from aelab.errors import ConfigError
from aelab.sweep_resume import holds_jobs

USAGE = ("aelab-bench benchmark=NAME [aelab-train overrides] [--out OUT [--merge]]  |  "
         "aelab-bench --report DIR [--out OUT [--merge]]  |  aelab-bench --list")


def benchmarks() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "benchmark").glob("*.yaml") if not p.stem.startswith("_"))


def check_run_mode(choice: str | None, multirun: bool) -> None:
    """aelab-train benchmark=NAME without -m would train one default job: refused, naming the command."""
    if choice and not multirun:
        raise ConfigError(f"benchmark={choice} is a multirun: aelab-bench benchmark={choice} (or aelab-train -m "
                          f"benchmark={choice}, which writes no report)")


def chosen(overrides: list[str]) -> str:
    from aelab.overrides import as_dict

    names = benchmarks()
    name = as_dict([o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "benchmark"]).get("benchmark")
    if name is None:
        raise ConfigError(f"no benchmark=NAME given; the benchmarks are {names} (conf/benchmark/)")
    if name not in names:
        raise ConfigError(f"benchmark={name} is not a benchmark; expected one of {names} (conf/benchmark/)")
    return name


def sweep_dir(overrides: list[str]) -> Path:
    """The folder the multirun writes into, as Hydra resolves it for these overrides (a sweep's values do not
    change it: they are left out of the composition)."""
    from aelab.config import compose
    from aelab.overrides import is_sweep

    fixed = [o for o in overrides if "=" not in o or not is_sweep(o.split("=", 1)[1])]
    return Path(str(compose(fixed, keep_hydra=True).hydra.sweep.dir))


def run(overrides: list[str], before: Callable[[Path], None] | None = None) -> tuple[int, Path]:
    """Run the benchmark's multirun (resuming when its folder holds jobs); returns aelab-train's exit code and the
    folder. `before` is given the folder first, to refuse what would fail only after the run."""
    from aelab.bench_report import log_command  # aelab.runs imports this module: the report's modules load late

    chosen(overrides)
    folder = sweep_dir(overrides)
    if before is not None:
        before(folder)
    resume = holds_jobs(folder) and not any(o.split("=", 1)[0] == "sweep_resume" for o in overrides)
    command = [sys.executable, "-m", "aelab.train", "-m", *overrides, *(["sweep_resume=true"] if resume else [])]
    print(f"aelab-bench: {'resuming' if resume else 'starting'} {folder}", flush=True)
    log_command(folder, " ".join(["aelab-bench", *(o for o in overrides if not o.startswith("sweep_resume="))]),
                time.time())
    return subprocess.run(command).returncode, folder


@entry("aelab-bench")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aelab-bench", usage=USAGE, description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="benchmark=NAME and any aelab-train override")
    parser.add_argument("--report", type=Path, metavar="DIR", help="only write the report of the jobs under DIR")
    parser.add_argument("--out", type=Path, default=None, help="where the report goes (default: DIR/benchmark)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the jobs of the report already at --out that DIR does not hold (a benchmark run "
                             "in parts, in folders that are gone); DIR's jobs replace theirs")
    parser.add_argument("--list", action="store_true", help="print the named benchmarks")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(benchmarks()))
        return 0
    from aelab.bench_report import carried_records, write_report

    if args.report is not None:
        if args.overrides:
            parser.error(f"--report DIR takes no overrides, got {args.overrides}")
        if not args.report.is_dir():
            parser.error(f"--report {str(args.report)!r} is not a directory")
        code, folder = 0, args.report
    else:
        def mergeable(folder: Path) -> None:  # a report it cannot merge with is refused before hours of run
            carried_records((args.out or folder / "benchmark") / "BENCHMARK.json", folder.name, set())

        # a ConfigError ends in one line (aelab.cli.entry)
        code, folder = run(args.overrides, before=mergeable if args.merge else None)
    if not holds_jobs(folder):
        print(f"aelab-bench: error: no job directories (with status.json) under {folder}", file=sys.stderr)
        return code or 1
    report = write_report(folder, args.out, merge=args.merge)
    print(report["summary"])
    print(f"wrote {', '.join(str(f) for f in report['files'])}")
    return code


if __name__ == "__main__":
    sys.exit(main())
