#!/usr/bin/env bash
# Fetches the Apache Kafka release pinned in tools/kafka/pom.xml from Maven Central into a cache outside the
# work tree and prints the folder of its jars. A second call downloads nothing. Any failure is one line on stderr.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
cache=${PAYEVENTS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/payevents}
libs="$cache/kafka-$version/libs"
pom_sum=$(sha256sum "$here/pom.xml" | cut -c1-16)
if [ -f "$libs/.complete-$pom_sum" ]; then echo "$libs"; exit 0; fi
command -v java >/dev/null 2>&1 || { echo "kafka: java is not installed (Apache Kafka $version needs Java 17 or newer)" >&2; exit 1; }
command -v mvn >/dev/null 2>&1 || { echo "kafka: mvn (Maven) is not installed; it fetches Apache Kafka $version from Maven Central" >&2; exit 1; }
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/kafka-$version.partial.XXXXXX")
log="$cache/kafka-$version-fetch.log"
if ! timeout 600 mvn -B -q -f "$here/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
     -DoutputDirectory="$tmp" >"$log" 2>&1; then
  rm -rf "$tmp"
  echo "kafka: could not download Apache Kafka $version from Maven Central with mvn (log: $log)" >&2
  exit 1
fi
touch "$tmp/.complete-$pom_sum"
rm -rf "$libs"; mkdir -p "$(dirname "$libs")"; mv "$tmp" "$libs"
echo "$libs"
