#!/usr/bin/env bash
# Fetches the evaluation text for `smelt perplexity` (docs/QUANTIZATION.md's table) into the asset
# cache (default ~/.cache/smelt/assets, override with SMELT_ASSETS), pinned by sha256:
#
#   python-tutorial-3.11.txt   (~199 KB) the reST sources of nine chapters of the Python 3.11
#                              tutorial, in reading order, from Debian's python3.11-doc package.
#
# Licence: the Python documentation is under the PSF License Agreement (see
# /usr/share/doc/python3.11-doc/copyright in the package); it may be copied and used with the
# copyright notice kept. The text is not committed to the repository.
#
# Needs apt-get (Debian bookworm sources), dpkg-deb and sha256sum. Idempotent: a text already
# present with the right hash is left alone. Prints the path of the text.
#
#   scripts/fetch-eval-text.sh
#
# If Debian has moved on from the pinned package version, the download fails (the .deb is also
# at https://snapshot.debian.org/package/python3.11/3.11.2-6%2Bdeb12u7/): put the .deb in
# $SMELT_ASSETS/downloads and run this again.
set -euo pipefail

ASSETS="${SMELT_ASSETS:-$HOME/.cache/smelt/assets}"
DL="$ASSETS/downloads"
mkdir -p "$ASSETS" "$DL"

PKG_VERSION=3.11.2-6+deb12u7
DEB="$DL/python3.11-doc_${PKG_VERSION}_all.deb"
DEB_SHA=eafa42c54a08dcf3892d2e9f8e29644877c241d09186ca19a4d06129a339c9f3
OUT="$ASSETS/python-tutorial-3.11.txt"
OUT_SHA=8b6e5ba45246464843745bd225d58ef4fa64f941599f6e07b71c663f2af6f9da
# Tutorial chapters, in the order the tutorial's index lists them.
CHAPTERS="appetite interpreter introduction controlflow datastructures modules inputoutput errors classes"

have() { # have FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}
check() { # check FILE SHA256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "fetch-eval-text: $1 has sha256 $got, expected $2" >&2
    rm -f "$1"
    exit 1
  fi
}

if have "$OUT" "$OUT_SHA"; then
  echo "$OUT"
  exit 0
fi

if ! have "$DEB" "$DEB_SHA"; then
  echo "fetch-eval-text: downloading python3.11-doc $PKG_VERSION (12.6 MB)" >&2
  (cd "$DL" && apt-get download -q "python3.11-doc=$PKG_VERSION" >&2)
  check "$DEB" "$DEB_SHA"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SRC=./usr/share/doc/python3.11/html/_sources/tutorial
dpkg-deb --fsys-tarfile "$DEB" | tar -x -C "$WORK" "$SRC"
: > "$OUT.tmp"
first=1
for c in $CHAPTERS; do
  [ $first = 1 ] || printf '\n' >> "$OUT.tmp"
  first=0
  cat "$WORK/$SRC/$c.rst.txt" >> "$OUT.tmp"
done
check "$OUT.tmp" "$OUT_SHA"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
