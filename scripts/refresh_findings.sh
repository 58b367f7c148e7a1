#!/usr/bin/env bash
# Re-measure every finding the README states about the demo checkpoints (issue 21, item 5), after they change.
#
#   bash scripts/refresh_findings.sh OUT [smoke]
#
# Scores the checkpoints in $ATTNVIZ_MODELS (default: models/) on the scenes in $DATA (default: data/scenes; its
# recipe is in attnviz.data.tuxpaint and attnviz.data.openclipart) and the photos in $PHOTOS (default:
# data/photos_more, from attnviz.data.more_photos). First, one after the other, the two runs that rewrite the model
# cards (`attnviz eval --write-cards`, `bench/photo_pointing.py --write-cards`); then every other finding in two
# lanes of one torch thread each. Every command's output goes to OUT/<name>.log (and OUT/<name>.json, .md where the
# bench writes one); the README, bench/BORDERS.md and bench/FAITHFULNESS.md are then edited from them by hand.
# About 2 h on the 2-core CPU (the 2000-scene evaluation alone 45 min); `smoke` runs the same commands on a handful
# of scenes (minutes) to check the plumbing, on a copy of the models folder so no card changes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash scripts/refresh_findings.sh OUT [smoke]}
PY=${PYTHON:-python}
DATA=${DATA:-data/scenes}
PHOTOS=${PHOTOS:-data/photos_more}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
if [ "${2:-}" = smoke ]; then
    copy="$OUT/models"
    rm -rf "$copy" && cp -r "${ATTNVIZ_MODELS:-models}" "$copy"
    export ATTNVIZ_MODELS="$copy"
    S500=6 S2000=8 S400=3 S100=2 S12=1 PLACE=1
else
    S500=500 S2000=2000 S400=400 S100=100 S12=12 PLACE=40
fi
A=(se cbam eca spatial coord mhsa simam)  # the two lanes' types (README: "run as two processes of 7 types")
B=(channel cbam_sc eca_max da ea sk_pre epsa_pre)

run() {  # run NAME COMMAND...: the command's output into OUT/NAME.log, its duration appended
    local name=$1 start=$SECONDS
    shift
    echo "== $name: $*" >&2
    "$@" >"$OUT/$name.log" 2>&1 || { echo "!! $name failed (exit $?): $OUT/$name.log" >&2; return 1; }
    echo "$(date -u +%FT%TZ) $((SECONDS - start)) s: $*" >>"$OUT/$name.log"
}

# The cards first (the lanes read them): README "Models", "Real photos, small and off-centre".
run eval500 "$PY" -m attnviz eval --data "$DATA" --scenes "$S500" --placements "$PLACE" --write-cards \
    --markdown "$OUT/eval500.md"
run photo_pointing "$PY" bench/photo_pointing.py --placements "$PLACE" --json "$OUT/photo_pointing.json" --write-cards

export OMP_NUM_THREADS=1
lane_a() {
    run eval2000 "$PY" -m attnviz eval --data "$DATA" --scenes "$S2000" --placements "$PLACE" --photo-folder "$PHOTOS" \
        --json "$OUT/eval2000.json"
    run checks_a "$PY" bench/checks_findings.py --data "$DATA" --scenes "$S400" --attention "${A[@]}" --json "$OUT/checks_a.json"
    run faith_a "$PY" bench/faithfulness_findings.py --data "$DATA" --scenes "$S12" --attention "${A[@]}" \
        --json "$OUT/faith_a.json"
}
lane_b() {
    run eval500_photos "$PY" -m attnviz eval --data "$DATA" --scenes "$S500" --placements "$PLACE" --photo-folder "$PHOTOS"
    run whole_photos "$PY" bench/whole_photos.py --photo-folder "$PHOTOS"
    run gate_effect "$PY" bench/gate_effect.py --data "$DATA" --scenes "$S100" --json "$OUT/gate_effect.json"
    run borders_a "$PY" bench/borders.py --data "$DATA" --scenes "$S400" --types plain,se,eca,eca_max,channel,cbam,cbam_sc \
        --json "$OUT/borders_a.json"
    run borders_b "$PY" bench/borders.py --data "$DATA" --scenes "$S400" \
        --types spatial,coord,simam,sk_pre,epsa_pre,da,ea,mhsa --json "$OUT/borders_b.json"
    run stats "$PY" bench/stats.py finding --scenes "$DATA" --n "$S500" --attentions se eca channel cbam sk_pre
    run checks_b "$PY" bench/checks_findings.py --data "$DATA" --scenes "$S400" --attention "${B[@]}" --json "$OUT/checks_b.json"
    run faith_b "$PY" bench/faithfulness_findings.py --data "$DATA" --scenes "$S12" --attention "${B[@]}" \
        --json "$OUT/faith_b.json"
}
lane_a &
a=$!
lane_b
wait "$a"

# The merged tables (the README's checks table, bench/FAITHFULNESS.md's).
run checks "$PY" bench/checks_findings.py --from-json "$OUT/checks_a.json" "$OUT/checks_b.json" --markdown "$OUT/checks.md"
run faithfulness "$PY" bench/faithfulness_findings.py --from-json "$OUT/faith_a.json" "$OUT/faith_b.json" \
    --markdown "$OUT/faithfulness.md"
echo "done: $OUT" >&2
