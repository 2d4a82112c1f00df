#!/usr/bin/env bash
# Pack what a GPU run of mambaout needs into .device/ (git-ignored) within the device tool's 64 MiB carry limit.
# Same layout as ../shared/device/pack.sh (node.xz, debs/, setup.sh) but prunes node_modules harder: browser bundles,
# source maps, typings, other platforms' native binaries, typescript and playwright are left out.
#   npm ci && bash scripts/pack_device.sh
#   device run: carry [".device"], command: source .device/setup.sh && node --import tsx scripts/bench.ts --backend webgpu ...
set -euo pipefail
root=$(pwd); out="$root/.device"
[ -f package.json ] || { echo "run from the project root" >&2; exit 2; }
exclude=$(git rev-parse --git-path info/exclude)  # also right in a git worktree, where .git is a file
mkdir -p "$(dirname "$exclude")"; grep -qx '/.device/' "$exclude" 2>/dev/null || echo '/.device/' >> "$exclude"
# The device runs a Node this project supports (engines: ^22.12 || >=24): with an older one here, carry Node 22
# from the npm registry (.ci/node-line.sh) instead of the local binary.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 12) ? 0 : 1)'; then
  PATH="$(dirname "$(bash "$root/.ci/node-line.sh" 22)"):$PATH"
  export PATH
fi
mkdir -p "$out"
[ "$(cat "$out/node.version" 2>/dev/null)" = "$(node --version)" ] || rm -f "$out/node.xz"
# The node binary and the Vulkan/GL loader packages (Debian, amd64), as ../shared/device/pack.sh lays them out.
mkdir -p "$out/debs"
if [ ! -f "$out/node.xz" ] || [ "$(readlink -f "$(command -v node)")" -nt "$out/node.xz" ]; then
  xz -T2 -6 -c "$(readlink -f "$(command -v node)")" > "$out/node.xz"
  node --version > "$out/node.version"
fi
if ! ls "$out"/debs/libvulkan1_*.deb >/dev/null 2>&1; then
  mkdir -p /tmp/apt-amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/apt-amd64'
  apt-get $o update >/dev/null 2>&1 || true
  (cd "$out/debs" && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>&1 | grep -v unsandboxed || true)
fi
rm -rf "$out/webgpu-mini"
# The generated tfjs gradient bundle is git-ignored, so the device copy of the tree lacks it: it travels here.
[ -f src/backend/tfjs_extras.generated.js ] || node scripts/build_tfjs_extras.mjs
tar -C "$root" -cf - \
  --exclude='*.map' --exclude='*.d.ts' --exclude='*.min.js' --exclude='*.min.js.html' --exclude='*.es2017.js' --exclude='*.fesm.js' \
  --exclude='node_modules/@tensorflow/*/dist/miniprogram' --exclude='node_modules/@tensorflow/tfjs-node*' \
  --exclude='node_modules/webgpu/dist/darwin-*' --exclude='node_modules/webgpu/dist/win32-*' --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='node_modules/onnxruntime-node/bin' \
  --exclude='node_modules/typescript' --exclude='node_modules/playwright-core' --exclude='node_modules/@types' --exclude='node_modules/.cache' \
  node_modules src/backend/tfjs_extras.generated.js | xz -T2 -6 > "$out/app.tar.xz"
cat > "$out/setup.sh" <<'SETUP'
# (onnxruntime-node binaries are left out: on the GPU the tfjs engine is used)
# source me on the device machine, from the project root
_d=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p /tmp/nodebin && xz -dc "$_d/node.xz" > /tmp/nodebin/node && chmod +x /tmp/nodebin/node
export PATH=/tmp/nodebin:$PATH
for f in "$_d"/debs/*.deb; do dpkg -x "$f" /; done; ldconfig
export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
xz -dc "$_d/app.tar.xz" | tar -C "$_d/.." -xf -
echo "device ready: node $(node --version), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
SETUP
du -sh "$out"/* | sed "s#$root/##"
echo "total: $(du -sh --exclude=webgpu-mini "$out" | cut -f1) (must stay under 64 MiB)"
