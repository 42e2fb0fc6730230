#!/usr/bin/env bash
# Runs every Go fuzz target in the module for FUZZTIME each (default 30s), one after another.
# A failing input is minimised for at most FUZZMINIMIZETIME (default 1s; go's own default is
# 60s, which can dwarf FUZZTIME).
# Usage: FUZZTIME=2m tools/fuzz.sh [package pattern...]   (default ./...)
set -euo pipefail
export PATH="/usr/local/go/bin:$PATH"
fuzztime="${FUZZTIME:-30s}"
minimizetime="${FUZZMINIMIZETIME:-1s}"
patterns=("$@")
((${#patterns[@]})) || patterns=(./...)

# `go test -list` prints the matching names of a package, then "ok <pkg> <time>".
listing="$(go test -run '^$' -list '^Fuzz' "${patterns[@]}")"
targets=()
names=()
while read -r first second _; do
  case "$first" in
    Fuzz*) names+=("$first") ;;
    ok)
      for n in "${names[@]}"; do targets+=("$second $n"); done
      names=()
      ;;
  esac
done <<<"$listing"

if ((${#targets[@]} == 0)); then
  echo "fuzz: no fuzz targets found in ${patterns[*]}"
  exit 0
fi

echo "fuzz: ${#targets[@]} target(s), $fuzztime each"
failed=0
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "=== $pkg $name"
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimizetime" "$pkg"; then
    echo "fuzz: FAILED $pkg $name (crashers are in $pkg's testdata/fuzz/$name)"
    failed=1
  fi
done
exit "$failed"
