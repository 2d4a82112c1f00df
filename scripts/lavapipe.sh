#!/usr/bin/env bash
# Mesa lavapipe (a software Vulkan driver) from Debian bookworm-backports, unpacked into .lavapipe/ (nothing is
# installed system-wide), so the WebGPU code path (Dawn -> Vulkan) runs on a machine without a GPU. bookworm's own
# Mesa (22.3) is too old for Dawn; the backport (25.x) works.
#   bash scripts/lavapipe.sh && source .lavapipe/env.sh && MAMBAOUT_GPU_TESTS=1 node --import tsx --test test/webgpu.test.ts
set -euo pipefail
root=$(pwd); d="$root/.lavapipe"
[ -f package.json ] || { echo "run from the project root" >&2; exit 2; }
ex=$(git rev-parse --git-path info/exclude 2>/dev/null || echo .git/info/exclude); mkdir -p "$(dirname "$ex")"; grep -qx '/.lavapipe/' "$ex" 2>/dev/null || echo '/.lavapipe/' >> "$ex"
if [ -f "$d/env.sh" ]; then echo "lavapipe ready in .lavapipe"; exit 0; fi
mkdir -p "$d/debs" "$d/lists/partial" "$d/root"
printf 'deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-backports main\n' > "$d/sources.list"
o=(-oDir::Etc::SourceList="$d/sources.list" -oDir::Etc::SourceParts=/dev/null -oDir::State::Lists="$d/lists" -oAPT::Architecture=amd64 -oAPT::Architectures=amd64)
apt-get "${o[@]}" update >/dev/null
ver=$(apt-cache "${o[@]}" policy mesa-vulkan-drivers | awk '/bpo12/ && /[0-9]/ {print $1; exit}' | sed 's/\*\*\*//')
[ -n "$ver" ] || ver=$(apt-cache "${o[@]}" madison mesa-vulkan-drivers | awk -F'|' '/backports/ {gsub(/ /,"",$2); print $2; exit}')
[ -n "$ver" ] || { echo "no mesa-vulkan-drivers in bookworm-backports" >&2; exit 1; }
# the driver and the libraries it needs that a bare machine may lack (newer libdrm from backports, LLVM, the loader)
deps=$(apt-cache "${o[@]}" depends "mesa-vulkan-drivers=$ver" | awk '/Depends:/ {print $2}' | grep -E '^(libllvm|libdrm|libvulkan|libxcb|libx11|libxshmfence|libwayland|libz3|libexpat|libelf|libsensors|libxml2|libedit|libicu|libffi|libtinfo)' | sort -u)
(cd "$d/debs" && apt-get "${o[@]}" download "mesa-vulkan-drivers=$ver" libvulkan1 $deps >/dev/null 2>&1 || apt-get "${o[@]}" download "mesa-vulkan-drivers=$ver" libvulkan1 $deps)
for f in "$d"/debs/*.deb; do dpkg -x "$f" "$d/root"; done
lib="$d/root/usr/lib/x86_64-linux-gnu"
[ -f "$lib/libvulkan_lvp.so" ] || { echo "libvulkan_lvp.so missing after unpacking" >&2; exit 1; }
printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s/libvulkan_lvp.so", "api_version": "1.3.0"}}\n' "$lib" > "$d/lvp_icd.json"
printf 'export LD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\nexport VK_DRIVER_FILES=%s\n' "$lib" "$d/lvp_icd.json" > "$d/env.sh"
echo "lavapipe $ver ready in .lavapipe (source .lavapipe/env.sh)"
