#!/usr/bin/env bash
# Idempotently builds the Neo4j Community 5.26 runtime (launcher jar + every dependency jar,
# all from Maven Central) into ~/.cache/mpp/neo4j/<hash>/lib, where <hash> covers pom.xml and
# the Java sources. Skips the build when that directory is already complete.
# Progress goes to stderr; the LAST stdout line is the classpath dir (use "$DIR/*").
#   env: MPP_CACHE (default ~/.cache/mpp), MPP_M2 (default $MPP_CACHE/m2), JAVA_HOME (JDK >= 17)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${MPP_CACHE:-$HOME/.cache/mpp}
M2=${MPP_M2:-$CACHE/m2}
log() { echo "[neo4j/install] $*" >&2; }

hash=$(
  cd "$HERE"
  { echo pom.xml; cat pom.xml
    find src -type f -name '*.java' | LC_ALL=C sort | while read -r f; do echo "$f"; cat "$f"; done
  } | sha256sum | cut -c1-16
)
DEST=$CACHE/neo4j/$hash
if [ -f "$DEST/lib/.complete" ]; then
  log "up to date: $DEST/lib"
  echo "$DEST/lib"
  exit 0
fi

command -v mvn >/dev/null || { log "mvn not found (apt-get install maven)"; exit 1; }
if [ -n "${JAVA_HOME:-}" ]; then JAVA=$JAVA_HOME/bin/java; else JAVA=java; fi
jv=$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ -z "$jv" ] || [ "$jv" -lt 17 ]; then log "need a JDK >= 17 (found '${jv:-none}')"; exit 1; fi

mkdir -p "$CACHE/neo4j" "$M2"
tmp=$(mktemp -d "$CACHE/neo4j/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "building into $DEST (maven repo $M2; first run downloads ~125 MB) ..."
t0=$(date +%s)
mvn -q -B -Dstyle.color=never -f "$HERE/pom.xml" -Dmaven.repo.local="$M2" -Dneo4j.build.dir="$tmp/build" package >&2
mkdir -p "$tmp/out/lib"
mv "$tmp"/build/lib/*.jar "$tmp/out/lib/"
mv "$tmp/build/mpp-neo4j-launcher.jar" "$tmp/out/lib/"
n=$(ls "$tmp/out/lib" | wc -l)
touch "$tmp/out/lib/.complete"
if [ -e "$DEST" ]; then rm -rf "$DEST"; fi   # stale partial dir (no .complete marker)
mv -T "$tmp/out" "$DEST" 2>/dev/null || [ -f "$DEST/lib/.complete" ]  # lost a race: fine
log "done: $n jars in $(( $(date +%s) - t0 ))s"
echo "$DEST/lib"
