#!/bin/sh
# Rebuild lephare-data-subset.tar.xz from a git mirror of
# https://github.com/lephare-photoz/lephare-data (see PROVENANCE.md).
#   sh resources/lephare/make_subset.sh /path/to/lephare-data.git [commit]
# The archive is reproducible: files in FILES order, mtime 0, owner 0, xz -9.
set -eu
GIT_DIR=$1
COMMIT=${2:-9cdd12b7e6f6ee830c1896cef34fe70b9f697c9f}
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
grep -v '^#' "$HERE/FILES" | grep -v '^$' | while read -r f; do
  mkdir -p "$TMP/data/$(dirname "$f")"
  git --git-dir="$GIT_DIR" show "$COMMIT:$f" > "$TMP/data/$f"
done
(cd "$TMP/data" && grep -v '^#' "$HERE/FILES" | grep -v '^$' | xargs sha256sum) > "$HERE/SHA256SUMS"
(cd "$TMP" && grep -v '^#' "$HERE/FILES" | grep -v '^$' | sed 's|^|data/|' \
  | tar --owner=0 --group=0 --numeric-owner --mtime=@0 --no-recursion -cf - -T - \
  | xz -9e -T1 > "$HERE/lephare-data-subset.tar.xz")
sha256sum "$HERE/lephare-data-subset.tar.xz" | sed "s|$HERE/||"
