#!/usr/bin/env bash
# Resolve the Kafka runtime jars listed in pom.xml into
#   ${MPP_CACHE:-~/.cache/mpp}/kafka/<sha256(pom.xml)[:16]>/lib
# Idempotent: if that dir is already complete, nothing is downloaded.
# Progress goes to stderr; the LAST line on stdout is the lib dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$HERE/pom.xml"
CACHE="${MPP_CACHE:-$HOME/.cache/mpp}"
M2="${MPP_M2_REPO:-$CACHE/m2}"
HASH=$(sha256sum "$POM" | cut -c1-16)
DEST="$CACHE/kafka/$HASH"
LIB="$DEST/lib"

if [[ -f "$DEST/.complete" && -d "$LIB" ]]; then
  echo "kafka: jars already in $LIB" >&2
  echo "$LIB"
  exit 0
fi

command -v mvn >/dev/null || { echo "kafka: mvn not found on PATH" >&2; exit 1; }
mkdir -p "$DEST" "$M2"
TMP=$(mktemp -d "$DEST/lib.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

echo "kafka: resolving jars from $POM (maven repo $M2) ..." >&2
start=$(date +%s)
# stdout of mvn -> stderr so only the lib path ends up on our stdout
mvn -B -q -Dstyle.color=never -f "$POM" -Dmaven.repo.local="$M2" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$TMP" 1>&2

n=$(find "$TMP" -maxdepth 1 -name '*.jar' | wc -l)
if ! ls "$TMP"/kafka_2.13-*.jar >/dev/null 2>&1 || ! ls "$TMP"/log4j-core-*.jar >/dev/null 2>&1; then
  echo "kafka: resolution incomplete ($n jars in $TMP)" >&2
  exit 1
fi

# atomic-ish publish: replace any half-built lib dir
rm -rf "$LIB"
mv "$TMP" "$LIB"
trap - EXIT
cp "$POM" "$DEST/pom.xml"
date -u +%FT%TZ > "$DEST/.complete"
echo "kafka: $n jars resolved into $LIB in $(( $(date +%s) - start ))s" >&2
echo "$LIB"
