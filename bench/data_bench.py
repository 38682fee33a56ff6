"""Benchmark of `llmcycle data`: end-to-end wall time of the real CLI (fresh process, imports included) and the
time of each step as the stage records it in manifest.json. Default: the full chitchat corpus.

    python bench/data_bench.py [--repeat 3] [--source chitchat] [--path P] [--set key=value ...] [--compare-lsh]

With --compare-lsh it also times the near-dedup candidate search both ways on the same MinHash signatures:
llmcycle's numpy banding against datasketch's MinHashLSH insert/query (its peer), and checks both propose the same
candidate pairs. Prints a table and writes bench/results/data_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "data_bench.json"


def one_run(args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, "-m", "llmcycle", "data", "--source", args.source, "--out", str(out)]
    if args.path:
        cmd += ["--path", args.path]
    for item in args.set or []:
        cmd += ["--set", item]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "LLMCYCLE_QUIET": "1"}, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    card = json.loads((out / "card.json").read_text())
    return {"wall_s": round(wall, 3), "load_before": round(load, 2), "steps_s": manifest["timings_s"], "card": card}


def datasketch_candidates(signatures, rows, cfg) -> dict[int, set[int]]:
    """The peer: datasketch's MinHashLSH with the same parameters, one insert and one query per record."""
    from datasketch import MinHash, MinHashLSH

    from llmcycle.data.dedup import MINHASH_SEED

    index = MinHashLSH(threshold=max(0.05, cfg.near_dup_threshold - 0.1), num_perm=cfg.minhash_perms,
                       weights=(0.2, 0.8))
    sketches = [MinHash(num_perm=cfg.minhash_perms, seed=MINHASH_SEED, hashvalues=signatures[i], scheme="affine32")
                for i in rows]
    with index.insertion_session() as session:
        for i, sketch in zip(rows, sketches):
            session.insert(i, sketch, check_duplication=False)
    found = {}
    for i, sketch in zip(rows, sketches):
        earlier = {j for j in index.query(sketch) if j < i}
        if earlier:
            found[i] = earlier
    return found


def compare_lsh(args: argparse.Namespace) -> dict:
    from llmcycle.config import load_config
    from llmcycle.data import DataConfig
    from llmcycle.data.dedup import ShingleHasher, band_candidates, lsh_bands, signature_matrix
    from llmcycle.data.sources import read_source
    from llmcycle.data.stage import apply_steps

    os.environ["LLMCYCLE_QUIET"] = "1"
    cfg = load_config(DataConfig, None, [*(args.set or []), "near_dedup=off"], source=args.source)
    if args.path:
        cfg.path = args.path
    data = read_source(cfg)
    examples, _ = apply_steps(list(data.examples), data.kind, cfg, {})
    hasher = ShingleHasher(cfg.shingle_words)
    hashes = [hasher(e.joined_text()) for e in examples]
    signatures = signature_matrix(hashes, cfg)
    rows = list(range(len(examples)))
    bands, width = lsh_bands(cfg)
    start = time.perf_counter()
    ours = band_candidates(signatures, rows, bands, width)
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    peer = datasketch_candidates(signatures, rows, cfg)
    peer_s = time.perf_counter() - start
    same = {i: s for i, s in ours.items() if s} == peer
    print(f"near-dedup candidates over {len(rows)} records ({bands} bands x {width} rows): "
          f"llmcycle numpy banding {ours_s:.3f} s, datasketch MinHashLSH {peer_s:.3f} s, "
          f"same candidates: {same} ({sum(map(len, peer.values()))} pairs)")
    return {"records": len(rows), "bands": bands, "rows_per_band": width, "llmcycle_banding_s": round(ours_s, 3),
            "datasketch_lsh_s": round(peer_s, 3), "same_candidates": same,
            "candidate_pairs": sum(map(len, peer.values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="chitchat")
    parser.add_argument("--path", default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--set", action="append", help="config override passed to llmcycle data --set")
    parser.add_argument("--compare-lsh", action="store_true", help="also time numpy banding vs datasketch LSH")
    args = parser.parse_args()

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            runs.append(one_run(args, Path(tmp) / f"run{i}"))
    steps = list(runs[0]["steps_s"])
    median_steps = {s: round(statistics.median(r["steps_s"].get(s, 0.0) for r in runs), 3) for s in steps}
    walls = [r["wall_s"] for r in runs]
    card = runs[-1]["card"]

    print(f"llmcycle data --source {args.source}: {args.repeat} runs, cpus={os.cpu_count()}, "
          f"load before runs={[r['load_before'] for r in runs]}")
    print(f"{'step':<22}{'median s':>10}")
    for step, seconds in median_steps.items():
        print(f"{step:<22}{seconds:>10.3f}")
    print(f"{'sum of steps':<22}{sum(median_steps.values()):>10.3f}")
    print(f"{'end-to-end (CLI)':<22}{statistics.median(walls):>10.3f}   (min {min(walls):.3f}, max {max(walls):.3f})")
    print(f"records read {card['records_read']}, written {card['records_written']}: "
          + ", ".join(f"{s} {v['records']}" for s, v in card["splits"].items()))
    for f in card["filters"]:
        print(f"  {f['step']:<20} removed {f['removed']:>5}  changed {f['changed']:>5}")

    lsh = compare_lsh(args) if args.compare_lsh else None
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "source": args.source,
        "path": args.path,
        "overrides": args.set or [],
        "repeat": args.repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "wall_s": walls,
        "wall_median_s": statistics.median(walls),
        "steps_median_s": median_steps,
        "runs": [{k: v for k, v in r.items() if k != "card"} for r in runs],
        "card": {"records_read": card["records_read"], "records_written": card["records_written"],
                 "splits": {s: v["records"] for s, v in card["splits"].items()}, "filters": card["filters"]},
        "lsh_comparison": lsh,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # one entry per benchmarked corpus, so a Cornell run does not overwrite the chitchat numbers
    key = args.source if not args.path else f"{args.source}:{args.path}"
    previous = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    entries = previous.get("results", {}) if isinstance(previous.get("results"), dict) else {}
    entries[key] = result
    RESULTS.write_text(json.dumps({"benchmark": "data_bench", "results": entries}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
