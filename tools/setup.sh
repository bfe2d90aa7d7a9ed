#!/usr/bin/env sh
# Installs what building and testing reel needs on Debian/Ubuntu (idempotent; only missing
# packages are installed): a C toolchain, pkg-config, clang (bindgen for ffmpeg's headers) and
# Debian's ffmpeg development libraries (mp4 in and out through video-rs / ffmpeg-next), plus the
# ffmpeg tools (ffprobe checks the mp4s in the tests). Rust itself comes from rustup.
set -eu
pkgs="gcc g++ make pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev \
libswscale-dev libswresample-dev libavfilter-dev libavdevice-dev ffmpeg"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  echo "setup: installing$missing" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
  $sudo apt-get clean  # the downloaded .debs are not needed once installed (disk is tight on CI)
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found: install Rust with rustup (https://rustup.rs)" >&2; exit 1; }
echo "setup: ok" >&2
