#!/usr/bin/env bash
# Make the cluster profiles usable by name, as users type them:
#   snakemake --profile apollo      (instead of --profile profiles/apollo)
#
# Snakemake looks for a profile NAME in ./NAME, in the user config dir
# (~/.config/snakemake, or $XDG_CONFIG_HOME/snakemake) and in /etc/xdg/snakemake.
# This script links (default) or copies profiles/<name>/ into that directory.
#
#   bash profiles/install.sh                 # link apollo, sdumont, htcondor
#   bash profiles/install.sh --copy apollo   # copy instead of link (e.g. $HOME not
#                                            # shared with the machine running snakemake)
#   bash profiles/install.sh --dest DIR      # another target directory
#   bash profiles/install.sh --system        # /etc/xdg/snakemake (root)
#   bash profiles/install.sh --uninstall     # remove what this script installed
#
# Idempotent. A name that already exists and was not installed by this script
# (not a link into this repository, no .pzpipe-installed marker) is left alone
# unless --force is given.
# Note: profiles refer to config/<site>.yaml relative to the current directory,
# so run snakemake from the repository root (or pass --configfile explicitly).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MODE=link FORCE=0 UNINSTALL=0 DEST=""
NAMES=()
while [ $# -gt 0 ]; do
  case "$1" in
    --copy) MODE=copy ;;
    --link) MODE=link ;;
    --force) FORCE=1 ;;
    --uninstall) UNINSTALL=1 ;;
    --dest) DEST="$2"; shift ;;
    --system) DEST=/etc/xdg/snakemake ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) NAMES+=("$1") ;;
  esac
  shift
done
[ ${#NAMES[@]} -gt 0 ] || NAMES=(apollo sdumont htcondor)
if [ -z "$DEST" ]; then
  DEST="${XDG_CONFIG_HOME:-$HOME/.config}/snakemake"
fi
mkdir -p "$DEST"

for name in "${NAMES[@]}"; do
  src="$HERE/$name"
  tgt="$DEST/$name"
  [ -f "$src/config.yaml" ] || { echo "no profile $src/config.yaml" >&2; exit 1; }
  ours=0
  if [ -L "$tgt" ] && [ "$(readlink -f "$tgt")" = "$(readlink -f "$src")" ]; then ours=1; fi
  if [ -d "$tgt" ] && [ -f "$tgt/.pzpipe-installed" ]; then ours=1; fi
  if [ "$UNINSTALL" = 1 ]; then
    if [ "$ours" = 1 ]; then rm -rf "$tgt"; echo "removed $tgt"; fi
    continue
  fi
  if [ -e "$tgt" ] || [ -L "$tgt" ]; then
    if [ "$ours" = 0 ] && [ "$FORCE" = 0 ]; then
      echo "skip $tgt: exists and was not installed from this repository (use --force)" >&2
      continue
    fi
    rm -rf "$tgt"
  fi
  if [ "$MODE" = link ]; then
    ln -s "$src" "$tgt"
  else
    cp -r "$src" "$tgt"
    echo "$src" > "$tgt/.pzpipe-installed"
  fi
  echo "installed $name -> $tgt ($MODE)"
done
echo "use: cd $(dirname "$HERE") && snakemake --profile ${NAMES[0]}"
