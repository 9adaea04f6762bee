#!/usr/bin/env bash
# Builds SoftHSM2 2.6.1 with the vendor SM2 mechanism (sm2-vendor-mechanism.patch)
# into a cache folder keyed by the pinned source and this folder's files, so it
# is rebuilt only when one of them changes.
#
#   build.sh            build if needed, print the install prefix
#   build.sh --prefix   print the install prefix without building
#
# The upstream tarball comes from Debian's source package. deb-src entries are
# derived from the machine's own apt sources into a private apt state folder,
# so the system's apt configuration is left untouched.
set -euo pipefail

VERSION=2.6.1
TARBALL=softhsm2_${VERSION}.orig.tar.gz
SHA256=ac9ac1e3f4402f88bf3e626a18f070f8031c031947ed469c6e17482495ec72b6

here=$(cd "$(dirname "$0")" && pwd)
cache=${SIGNERD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/signerd}
key=$( (echo "$SHA256"; cat "$here/build.sh" "$here/sm2-vendor-mechanism.patch") | sha256sum | cut -c1-16)
prefix=$cache/softhsm2-$VERSION-sm2-$key
module=$prefix/lib/softhsm/libsofthsm2.so

if [ "${1:-}" = "--prefix" ]; then echo "$prefix"; exit 0; fi
if [ -f "$prefix/.built" ] && [ -f "$module" ]; then echo "$prefix"; exit 0; fi

log() { echo "softhsm: $*" >&2; }

fetch_tarball() {
  local dest=$1 apt=$cache/apt
  if [ -f "$dest" ] && echo "$SHA256  $dest" | sha256sum -c --status; then return; fi
  log "fetching SoftHSM2 $VERSION source through apt-get source"
  rm -rf "$apt"; mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/parts" "$apt/src"
  # deb822 files: same stanzas, Types switched to deb-src.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS="";FS="\n"} {out=""; for(i=1;i<=NF;i++){ if($i ~ /^#/) continue;
         if($i ~ /^Types:/) $i="Types: deb-src"; out=out $i "\n"} print out}' "$f" > "$apt/parts/$(basename "$f")"
  done
  # one-line format: deb lines become deb-src lines.
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >> "$apt/parts/derived.list"
  done
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/parts"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update >&2 || log "apt-get update reported errors; trying the lists it got"
  # Exits non-zero when the Debian packaging tarball is missing; only the
  # upstream tarball is needed, and its checksum decides.
  (cd "$apt/src" && apt-get "${opts[@]}" source --download-only softhsm2 >&2) || true
  [ -f "$apt/src/$TARBALL" ] || { log "apt-get source did not deliver $TARBALL"; exit 1; }
  echo "$SHA256  $apt/src/$TARBALL" | sha256sum -c --status ||
    { log "$TARBALL does not match the pinned sha256 $SHA256"; exit 1; }
  mv "$apt/src/$TARBALL" "$dest"
  rm -rf "$apt"
}

mkdir -p "$cache"
fetch_tarball "$cache/$TARBALL"

work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$cache/$TARBALL" -C "$work"
src=$work/softhsm2-$VERSION
patch -d "$src" -p1 --quiet < "$here/sm2-vendor-mechanism.patch"
log "building into $prefix"
(
  cd "$src"
  ./configure --prefix="$prefix" --with-crypto-backend=openssl --disable-gost \
    --disable-p11-kit --with-objectstore-backend-db=no --disable-static >"$work/configure.log" 2>&1 ||
    { tail -30 "$work/configure.log" >&2; exit 1; }
  make -j"$(nproc)" >"$work/make.log" 2>&1 || { grep -B5 -A5 -m5 'error' "$work/make.log" >&2; exit 1; }
  rm -rf "$prefix"
  make install >"$work/install.log" 2>&1 || { tail -30 "$work/install.log" >&2; exit 1; }
)
touch "$prefix/.built"
echo "$prefix"
