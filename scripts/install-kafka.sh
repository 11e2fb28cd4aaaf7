#!/usr/bin/env bash
# Installs Apache Kafka's broker and tools as jars from Maven Central into
# target/tools/kafka-<version>/ (libs/, config/, bin/), unless that version is there already.
# The version is the one docker-compose.yml's `apache/kafka` image names, so the broker the
# tests run is the broker users deploy (crates/deploy-tests checks the two agree). Needs Java
# 17 and Maven (the `polyglot` machines have both; elsewhere Debian's packages are installed);
# the download is about 60 MB, once.
#
# bin/ holds thin wrappers equivalent to the image's own scripts (kafka-server-start.sh,
# kafka-storage.sh, kafka-topics.sh, kafka-configs.sh, kafka-acls.sh,
# kafka-broker-api-versions.sh), so deploy/*.sh run unchanged with KAFKA_BIN pointing here.
# They take KAFKA_HEAP_OPTS (default -Xmx512m -Xms128m for the broker, -Xmx256m for tools),
# KAFKA_JVM_PERFORMANCE_OPTS and KAFKA_OPTS as the image's do.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's|^ *image: apache/kafka:\([0-9.]*\)$|\1|p' docker-compose.yml | sort -u)
if [ -z "$version" ] || [ "$(echo "$version" | wc -l)" != 1 ]; then
  echo "install-kafka.sh: docker-compose.yml must name exactly one apache/kafka version, found: ${version:-none}" >&2
  exit 1
fi
home="$PWD/target/tools/kafka-$version"
if [ -f "$home/.installed" ]; then
  exit 0
fi

# Java 17 and Maven come with the `polyglot` machines; elsewhere, Debian's packages.
if ! command -v java >/dev/null 2>&1 || ! command -v mvn >/dev/null 2>&1; then
  echo "==> installing OpenJDK 17 and Maven (Debian's packages)"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless maven >/dev/null
fi

echo "==> installing Apache Kafka $version (jars from Maven Central) into $home"
rm -rf "$home"
mkdir -p "$home/bin" "$home/config" "$home/pom"
sed "s|@KAFKA_VERSION@|$version|" deploy/kafka-dist/pom.xml > "$home/pom/pom.xml"
mvn -q -B -Dstyle.color=never -f "$home/pom/pom.xml" dependency:copy-dependencies \
  -DoutputDirectory="$home/libs" -DincludeScope=runtime
cp deploy/kafka-dist/log4j.properties deploy/kafka-dist/tools-log4j.properties "$home/config/"

# The one launcher every wrapper goes through, as kafka-run-class.sh is in the image.
cat > "$home/bin/kafka-run-class.sh" <<'RUN'
#!/usr/bin/env bash
# kafka-run-class.sh CLASS [ARGS...]: runs a class of Apache Kafka's jars.
set -euo pipefail
home=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log4j=${KAFKA_LOG4J_CONFIG:-$home/config/tools-log4j.properties}
# shellcheck disable=SC2086 # the option variables hold several words, as in Kafka's own scripts
exec java ${KAFKA_HEAP_OPTS:--Xmx256m} \
  ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true} \
  "-Dlog4j.configuration=file:$log4j" ${KAFKA_OPTS:-} -cp "$home/libs/*" "$@"
RUN

wrapper() { # script class [extra environment]
  cat > "$home/bin/$1" <<SCRIPT
#!/usr/bin/env bash
$3exec "\$(dirname "\${BASH_SOURCE[0]}")/kafka-run-class.sh" $2 "\$@"
SCRIPT
}
# The broker keeps C2 (long-running) and gets the broker's log4j configuration.
wrapper kafka-server-start.sh kafka.Kafka \
  'export KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m -Xms128m}
export KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseSerialGC -Djava.awt.headless=true}
export KAFKA_LOG4J_CONFIG=${KAFKA_LOG4J_CONFIG:-$(dirname "${BASH_SOURCE[0]}")/../config/log4j.properties}
'
wrapper kafka-storage.sh kafka.tools.StorageTool ''
wrapper kafka-topics.sh org.apache.kafka.tools.TopicCommand ''
wrapper kafka-configs.sh kafka.admin.ConfigCommand ''
wrapper kafka-acls.sh kafka.admin.AclCommand ''
wrapper kafka-broker-api-versions.sh kafka.admin.BrokerApiVersionsCommand ''
chmod +x "$home"/bin/*.sh

# Each wrapper's class must be in the jars fetched: a wrong name fails here, not in a test.
classes=$(python3 -c 'import sys, zipfile
for jar in sys.argv[1:]:
    print("\n".join(zipfile.ZipFile(jar).namelist()))' "$home"/libs/kafka_2.13-*.jar "$home"/libs/kafka-tools-*.jar)
for script in "$home"/bin/kafka-*.sh; do
  class=$(sed -n 's|.*kafka-run-class.sh" \([A-Za-z.]*\) .*|\1|p' "$script")
  [ -n "$class" ] || continue
  if ! grep -qx "${class//.//}.class" <<<"$classes"; then
    echo "install-kafka.sh: $(basename "$script"): class $class is not in Kafka $version's jars" >&2
    exit 1
  fi
done
echo "$version" > "$home/.installed"
echo "==> Apache Kafka $version: $home/bin"
