#!/usr/bin/env bash
# The user's path, from `npm install` to a first call, as a test: packs the
# publishable packages, creates a fresh project in a temporary folder, and
# follows README.md's Install and Code generation sections there. The
# install lines, buf.yaml and buf.gen.yaml are read from the README (the
# fenced block after each `<!-- user-path: ... -->` marker), with the two
# @mqrpc packages replaced by their tarballs. Then:
# - @arethetypeswrong/cli checks both tarballs' types (ESM-only profile);
# - `npx buf generate` with the README's buf.gen.yaml (target=ts), and again
#   with the plugins' default target (js+dts) under the project's TypeScript;
# - a strict tsconfig type-checks the project under TypeScript 7 (what the
#   README's `npm install typescript` installs today) and 5, with
#   moduleResolution nodenext, node16 and bundler;
# - test/user-path/project/src/main.ts calls test/user-path/project/src/server.ts
#   in a second process over the embedded broker: a unary call and 2,000
#   messages of a batched stream, asserting the publish count; again with
#   the lowest Connect and protobuf-es the runtime's peer ranges allow;
# - without aedes installed, the runtime still loads and startEmbeddedBroker
#   names the missing package.
# Needs the npm registry. Takes one to two minutes; every step is bounded.
# MQRPC_USER_PATH_KEEP=1 keeps the temporary folder (its path is printed).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/test/user-path"
work="$(mktemp -d "${TMPDIR:-/tmp}/mqrpc-user-path.XXXXXX")"
if [ "${MQRPC_USER_PATH_KEEP:-}" = 1 ]; then
  echo "user-path: working in $work (kept)"
else
  trap 'rm -rf "$work"' EXIT
fi
SECONDS=0
step() { printf '\n== user-path: %s (%ss)\n' "$*" "$SECONDS"; }
fail() {
  echo "user-path: FAILED: $*" >&2
  exit 1
}
# The fenced block after `<!-- user-path: $1 ...-->` in README.md.
readme_block() {
  awk -v marker="<!-- user-path: $1" '
    index($0, marker) == 1 { found = 1; next }
    found && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
  ' "$repo/README.md"
}

step "pack"
mkdir -p "$work/packs"
(cd "$repo" && npm pack --silent -w packages/runtime -w packages/protoc-gen-mqrpc \
  --pack-destination "$work/packs" >/dev/null)
runtime_tgz="$(ls "$work"/packs/mqrpc-runtime-*.tgz)"
plugin_tgz="$(ls "$work"/packs/mqrpc-protoc-gen-mqrpc-*.tgz)"
for tgz in "$runtime_tgz" "$plugin_tgz"; do
  listing="$(tar tzf "$tgz")"
  for file in package/README.md package/LICENSE package/package.json; do
    grep -qx "$file" <<<"$listing" || fail "$(basename "$tgz") has no ${file#package/}"
  done
  if grep -E '\.test\.' <<<"$listing"; then fail "$(basename "$tgz") carries tests"; fi
  tar xzOf "$tgz" package/LICENSE | cmp -s - "$repo/LICENSE" ||
    fail "$(basename "$tgz")'s LICENSE differs from the repository's"
done
grep -qx package/proto/mqrpc/v1/options.proto <<<"$(tar tzf "$plugin_tgz")" ||
  fail "the plugin's tarball has no proto/mqrpc/v1/options.proto"

step "types of the tarballs (@arethetypeswrong/cli, ESM-only profile)"
for tgz in "$runtime_tgz" "$plugin_tgz"; do
  timeout 120 npx --yes @arethetypeswrong/cli@0.18.5 --profile esm-only "$tgz"
done

step "a fresh project, installed by the README's commands"
app="$work/app"
cp -r "$here/project" "$app"
cd "$app"
printf '{ "name": "user-path-app", "private": true, "type": "module" }\n' >package.json
readme_block "buf.yaml" >buf.yaml
readme_block "buf.gen.yaml" >buf.gen.yaml
[ -s buf.yaml ] && [ -s buf.gen.yaml ] || fail "README.md has no buf.yaml or buf.gen.yaml block"
mapfile -t installs < <(readme_block "install" | sed 's/[[:space:]]*#.*$//' | grep -E '^npm install ')
[ ${#installs[@]} -gt 0 ] || fail "README.md has no install block"
# The packages' READMEs repeat these lines: they must not drift.
for readme in "$repo"/packages/runtime/README.md "$repo"/packages/protoc-gen-mqrpc/README.md; do
  while read -r line; do
    readme_block "install" | grep -qxF -- "$line" ||
      fail "${readme#"$repo"/}: \"$line\" is not among README.md's install lines"
  done < <(grep -E '^npm install ' "$readme")
done
for line in "${installs[@]}"; do
  line="$(sed -E "s#@mqrpc/runtime( |\$)#$runtime_tgz\\1#; s#@mqrpc/protoc-gen-mqrpc( |\$)#$plugin_tgz\\1#" <<<"$line")"
  echo "\$ $line"
  # shellcheck disable=SC2086 # the README's words, split as a shell would
  timeout 300 $line --no-audit --no-fund 2>&1 | tee -a install.log
done
# The project's own choice, not ours: Node's types for its scripts.
timeout 120 npm install --no-audit --no-fund --save-dev "@types/node@^${NODE_VERSION:-$(node -p 'process.versions.node.split(".")[0]')}" 2>&1 | tee -a install.log
if grep -E 'EBADENGINE|ERESOLVE|peer dep' install.log | grep -i mqrpc; then
  fail "npm complained about an @mqrpc package"
fi
# One copy of Connect and protobuf-es for the app, the runtime and Connect
# (the code generators may bring their own protobuf-es; they run apart).
for nested in @mqrpc/runtime/node_modules/@connectrpc @mqrpc/runtime/node_modules/@bufbuild \
  @connectrpc/connect/node_modules/@bufbuild; do
  [ ! -e "node_modules/$nested" ] || fail "node_modules/$nested: a second copy beside the app's"
done
ts_version="$(npx tsc --version)"
echo "project TypeScript: $ts_version"

step "buf generate (README recipe: target=ts)"
npx buf generate
[ -f src/gen/demo/v1/demo_mqrpc.ts ] || fail "buf generate wrote no demo_mqrpc.ts"
grep -q 'batchedStream: true' src/gen/demo/v1/demo_mqrpc.ts ||
  fail "the batched_stream option did not reach the generated settings"

step "buf generate with the default target (js+dts), under the project's $ts_version"
npx buf generate --template '{"version":"v2","plugins":[
  {"local":"node_modules/.bin/protoc-gen-es","out":"src/gen-js","opt":["import_extension=js"]},
  {"local":"node_modules/.bin/protoc-gen-mqrpc","out":"src/gen-js","opt":["import_extension=js"]}]}'
[ -f src/gen-js/demo/v1/demo_mqrpc.d.ts ] || fail "no demo_mqrpc.d.ts for target js+dts"

step "type-check (strict) under $ts_version and TypeScript 5, three module resolutions"
write_tsconfig() { # name module moduleResolution
  printf '{ "extends": "./tsconfig.json", "compilerOptions": { "noEmit": true, "module": "%s", "moduleResolution": "%s" } }\n' \
    "$2" "$3" >"$1"
}
write_tsconfig tsconfig.nodenext.json NodeNext NodeNext
write_tsconfig tsconfig.node16.json Node16 Node16
write_tsconfig tsconfig.bundler.json Preserve Bundler
# TypeScript 5 from a folder of its own: `npx -p typescript@5 tsc` would run
# the project's node_modules/.bin/tsc, which is 7.
timeout 120 npm install --silent --no-audit --no-fund --prefix "$work/ts5" typescript@5 >/dev/null
tsc5=("node" "$work/ts5/node_modules/typescript/bin/tsc")
ts5_version="$("${tsc5[@]}" --version)"
[[ "$ts5_version" == "Version 5."* ]] || fail "typescript@5 is $ts5_version"
for config in tsconfig.nodenext.json tsconfig.node16.json tsconfig.bundler.json; do
  echo "$ts_version, $config"
  timeout 120 npx tsc -p "$config"
  echo "$ts5_version, $config"
  timeout 120 "${tsc5[@]}" -p "$config"
done

step "build, then call across two processes over the embedded broker"
timeout 120 npx tsc -p tsconfig.json
timeout 120 node dist/main.js

step "the lowest versions the runtime's peer ranges allow"
# The floor of each range in the runtime's peerDependencies (^x.y.z), so
# the ranges the package states are the ranges that were run.
mapfile -t floors < <(node -e '
  const peers = require("./node_modules/@mqrpc/runtime/package.json").peerDependencies;
  for (const name of ["@connectrpc/connect", "@bufbuild/protobuf"]) {
    const range = peers[name];
    if (!/^\^\d+\.\d+\.\d+$/.test(range)) throw new Error(`${name}: range ${range} is not ^x.y.z`);
    console.log(`${name}@${range.slice(1)}`);
  }')
echo "${floors[*]}"
timeout 120 npm install --no-audit --no-fund --no-save "${floors[@]}" >/dev/null 2>&1
for floor in "${floors[@]}"; do
  installed="$(node -p "require('./node_modules/${floor%@*}/package.json').version")"
  [ "${floor##*@}" = "$installed" ] || fail "${floor%@*} is $installed after installing $floor"
done
timeout 120 npx tsc -p tsconfig.nodenext.json
timeout 120 "${tsc5[@]}" -p tsconfig.nodenext.json
rm -rf dist
timeout 120 npx tsc -p tsconfig.json
timeout 120 node dist/main.js

step "without aedes: the runtime loads and startEmbeddedBroker names the package"
timeout 120 npm uninstall --no-audit --no-fund aedes >/dev/null 2>&1
[ ! -e node_modules/aedes ] || fail "aedes is still installed: something other than the README's line pulls it in"
message="$(node --input-type=module -e '
  const { startEmbeddedBroker } = await import("@mqrpc/runtime");
  try { await startEmbeddedBroker(); console.log("started"); } catch (e) { console.log(e.message); }
')"
echo "$message"
grep -q 'npm install aedes' <<<"$message" || fail "startEmbeddedBroker without aedes said: $message"

step "passed"
