"""Did a change slow training down? The training throughput of one configuration at two git commits, measured in
fresh processes that alternate between the commits (A B B A ...), each timing CPU seconds with one torch thread
(the harness's --cpu-time clock), which other processes and a machine whose wall-clock speed drifts disturb far
less than wall time. Each commit is checked out into a temporary git worktree; the harness is this checkout's.

    python experiments/benchmarks/commits.py 2b4a927 HEAD experiment=iwae_binarized model.elbo_warmup_epochs=0 \
        '~callbacks.nll' --batches 45 --repeats 4

prints one line per process and a summary: the median images per CPU-second at each commit and their ratio
(B over A). Overrides follow aelab-train's syntax; one short training epoch of `--batches` batches is timed after
`--warmup` batches, with validation cut to two batches and no test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def checkout(commit: str, path: Path) -> Path:
    """A detached worktree of `commit` at `path`; its src/aelab/conf points at its own conf/, as an installed
    package's aelab.conf does (the editable install would otherwise serve this checkout's configs)."""
    proc = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(path), commit],
                          capture_output=True, text=True)
    if proc.returncode:
        last = (proc.stderr.strip().splitlines() or ["git worktree add failed"])[-1]
        raise SystemExit(f"commits.py: cannot check out commit {commit!r} of {REPO}: {last}")
    link = path / "src" / "aelab" / "conf"
    if not link.exists():
        link.symlink_to(Path("..") / ".." / "conf")
    return path


def child(overrides: list[str], batches: int, warmup: int, work: Path) -> None:
    """In the process whose PYTHONPATH puts a worktree's src/ first: one timed epoch; prints the meter's result."""
    sys.path.insert(1, str(REPO))  # the harness of this checkout, after the worktree's aelab
    from experiments.benchmarks.harness import CLOCK, aelab_train

    CLOCK.use_cpu_time()
    run = ["trainer.max_epochs=1", "epochs=1", f"++trainer.limit_train_batches={batches + warmup}",
           "++trainer.limit_val_batches=2", "test=false", *overrides]
    result, _ = aelab_train(run, work, "run", warmup=warmup)
    print("RESULT " + json.dumps(result), flush=True)


def measure(commit: str, path: Path, args, work: Path) -> float:
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(path / "src")}
    cmd = [sys.executable, __file__, "--child", str(work), str(args.batches), str(args.warmup), *args.overrides]
    proc = subprocess.run(cmd, env=env, cwd=path, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"commits.py: the run at {commit} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])["images_per_s"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:  # measure()'s processes: WORK BATCHES WARMUP OVERRIDES...
        work, batches, warmup, *overrides = argv[1:]
        child(overrides, int(batches), int(warmup), Path(work))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="the reference commit")
    parser.add_argument("b", help="the commit compared with it")
    parser.add_argument("overrides", nargs="*", help="aelab-train overrides, e.g. experiment=iwae_binarized")
    parser.add_argument("--batches", type=int, default=45, help="timed training batches per process")
    parser.add_argument("--warmup", type=int, default=5, help="batches before the clock starts")
    parser.add_argument("--repeats", type=int, default=4, help="processes per commit (in A B B A order)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batches < 1 or args.warmup < 0:
        parser.error("--repeats and --batches must be >= 1 and --warmup >= 0")
    names = (args.a, args.b)
    with tempfile.TemporaryDirectory(prefix="aelab-commits-") as tmp:
        root = Path(tmp)
        paths: list[Path] = []
        rates: list[list[float]] = [[], []]
        try:
            for i, commit in enumerate(names):  # A and B may name the same commit: one worktree each
                paths.append(checkout(commit, root / str(i)))
            for r in range(args.repeats):
                for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                    rates[i].append(measure(names[i], paths[i], args, root / f"work-{i}-{r}"))
                    print(f"{names[i]}: {rates[i][-1]:,.1f} images per CPU-second", flush=True)
        finally:
            for path in paths:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                               capture_output=True)
    med = [statistics.median(v) for v in rates]
    print(f"median images per CPU-second (one torch thread, {args.batches} batches after {args.warmup}, "
          f"n={args.repeats} each): {names[0]} {med[0]:,.1f}, {names[1]} {med[1]:,.1f}; "
          f"{names[1]} / {names[0]} = {med[1] / med[0]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
