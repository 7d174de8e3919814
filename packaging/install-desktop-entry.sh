#!/bin/sh
# Add Quantdesk to the application menu of the current user (no root needed):
# the launcher entry points at the executable beside this script, and the icons go
# into the user's hicolor theme. Run it again after moving the folder;
# `./install-desktop-entry.sh --remove` takes both away again.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
entry="$data/applications/quantdesk.desktop"

if [ "${1:-}" = "--remove" ]; then
    rm -f "$entry"
    find "$data/icons/hicolor" -path '*/apps/quantdesk.*' -delete 2>/dev/null || true
    echo "Removed the Quantdesk launcher from $data"
    exit 0
fi

if [ ! -x "$here/quantdesk" ]; then
    echo "install-desktop-entry.sh: no quantdesk executable in $here; run this script from the unpacked bundle" >&2
    exit 1
fi

mkdir -p "$data/applications"
# Exec and TryExec get the absolute path (quoted, as the desktop entry spec asks).
sed -e "s|^Exec=.*|Exec=\"$here/quantdesk\"|" -e "s|^TryExec=.*|TryExec=$here/quantdesk|" \
    "$here/share/applications/quantdesk.desktop" > "$entry.tmp"
mv "$entry.tmp" "$entry"
(cd "$here/share/icons" && find hicolor -type f) | while read -r icon; do
    mkdir -p "$data/icons/$(dirname "$icon")"
    cp "$here/share/icons/$icon" "$data/icons/$icon"
done
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null 2>&1 && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "Quantdesk added to the application menu ($entry)"
