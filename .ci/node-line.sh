#!/usr/bin/env bash
# Print the path of a Node.js binary of the given major line (e.g. 22), from the npm registry's `node` package
# (npx caches it under ~/.npm/_npx: the registry is all this needs, and a second call is offline).
#   PATH="$(dirname "$(bash .ci/node-line.sh 22)"):$PATH"
set -euo pipefail
major=${1:?usage: node-line.sh MAJOR}
bin=$(npx -y -p "node@$major" -c 'command -v node' 2>/dev/null | tail -1)
[ -n "$bin" ] || { echo "node-line.sh: could not get node@$major from the npm registry" >&2; exit 1; }
bin=$(readlink -f "$bin")
v=$("$bin" --version)
[ "${v#v}" != "$v" ] && [ "${v%%.*}" = "v$major" ] || { echo "node-line.sh: $bin is $v, not v$major" >&2; exit 1; }
echo "$bin"
