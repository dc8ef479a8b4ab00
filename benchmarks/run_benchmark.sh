#!/bin/bash
# The full benchmark runs of docs/results/benchmark.md (three IRFs, 9-18 min each on 2 shared cores).
# Usage: benchmarks/run_benchmark.sh [N] [N_SLOW] [OUT]
set -euo pipefail
N=${1:-300}
N_SLOW=${2:-50}
OUT=${3:-/tmp/gammapy-cnn-benchmark}
# gammapy's data folder: $GAMMAPY_DATA (with cta-caldb/ and cta-1dc-irf/), else the one
# gammapy_cnn.example_data.gammapy_data_dir finds
DATA=${GAMMAPY_DATA:-$(python -c "from gammapy_cnn.example_data import gammapy_data_dir; print(gammapy_data_dir())")}
PROD5=$DATA/cta-caldb/Prod5-North-20deg-AverageAz-4LSTs09MSTs.180000s-v0.1.fits.gz
IRF_1DC=$DATA/cta-1dc-irf/South_z20_50h_irf_file.fits.gz

nice -n 5 gammapy-cnn benchmark --n "$N" --n-slow "$N_SLOW" --output "$OUT/default-z20" \
    > "$OUT-default-z20.log"
nice -n 5 gammapy-cnn benchmark --n "$N" --n-slow "$N_SLOW" --irf "$PROD5" --output "$OUT/prod5" \
    > "$OUT-prod5.log"
nice -n 5 gammapy-cnn benchmark --n "$N" --n-slow "$N_SLOW" --irf "$IRF_1DC" --output "$OUT/1dc" \
    > "$OUT-1dc.log"
python benchmarks/benchmark_report.py --run "$OUT/default-z20" default-z20 --run "$OUT/prod5" prod5 \
    --run "$OUT/1dc" 1dc \
    ${NOTES:+--notes "$NOTES"} --output docs/results/benchmark.md
