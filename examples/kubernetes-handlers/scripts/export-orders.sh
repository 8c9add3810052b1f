#!/bin/sh
# A spec.script job's command, mounted from a ConfigMap at /opt/shardline/scripts (agent-patch.yaml)
# and allowed with --allow-script=/opt/shardline/scripts/export-orders.sh. The execution's context
# is in SHARDLINE_* variables, and as JSON on stdin. Exit 0 succeeds with the end of stdout as the
# result; anything else fails with the end of stderr.
set -eu

format=csv
while [ $# -gt 0 ]; do
  case "$1" in
    --format) format="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

region="${SHARDLINE_SHARD_PARAMETER:-shard-$SHARDLINE_SHARD}"
# In /tmp, the pod's one writable directory (an emptyDir: the root file system is read-only).
out=$(mktemp)
trap 'rm -f "$out"' EXIT
printf 'region,fired,attempt\n%s,%s,%s\n' "$region" "$SHARDLINE_FIRE_TIME" "$SHARDLINE_ATTEMPT" >"$out"
# Your export goes here: upload "$out" somewhere.
rows=$(($(wc -l <"$out") - 1))
echo "exported $rows row(s) of region $region as $format (shard $SHARDLINE_SHARD of $SHARDLINE_SHARD_COUNT, revision $SHARDLINE_REVISION)"
