#!/bin/sh
# /opt/whatsapp/bin/cleanup.sh - stand-in for the log cleanup the WA on-premises guide describes.
#
# 1. Every regular file directly under $WA_LOG_DIR (default /var/log/whatsapp) larger than the
#    role's bound (webapp 20 MiB, coreapp/master 15 MiB, or $WA_ROTATE_BYTES) is gzipped into
#    archive/<name>.<UTC timestamp>.gz and then truncated in place (copytruncate style).
# 2. Only the newest $WA_ARCHIVE_KEEP (default 30) files of each log are kept in archive/ (by
#    mtime), as logrotate's "rotate 30" counts per log: a file's log is its name without
#    the compression suffix and the rotation tokens (web.log.1.gz, web.log-20260101.gz and
#    web.log.20260101T000000Z-1.gz are all web.log's).
# 3. One "rotated ..." line per rotated file and a summary line go to stdout; exit 0.
# Any failure: message on stderr, exit 1 (bad configuration: exit 2).
# Test knobs: WA_CLEANUP_SLEEP=N sleeps N seconds first; WA_CLEANUP_FAIL=1 forces a failure.

prog=cleanup.sh
LOG_DIR=${WA_LOG_DIR:-/var/log/whatsapp}
ARCHIVE_DIR="$LOG_DIR/archive"
KEEP=${WA_ARCHIVE_KEEP:-30}

fail() {
    echo "$prog: error: $*" >&2
    exit 1
}

usage_error() {
    echo "$prog: error: $*" >&2
    exit 2
}

is_count() {
    case "$1" in
        ''|*[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

if [ -n "${WA_CLEANUP_SLEEP:-}" ]; then
    sleep "$WA_CLEANUP_SLEEP" || usage_error "bad WA_CLEANUP_SLEEP '$WA_CLEANUP_SLEEP'"
fi

if [ "${WA_CLEANUP_FAIL:-0}" = 1 ]; then
    fail "forced failure (WA_CLEANUP_FAIL=1)"
fi

case "${WA_ROLE:-}" in
    webapp) bound=20971520 ;;
    coreapp|master) bound=15728640 ;;
    *) usage_error "unknown WA_ROLE '${WA_ROLE:-}' (expected webapp, coreapp or master)" ;;
esac
if [ -n "${WA_ROTATE_BYTES:-}" ]; then
    is_count "$WA_ROTATE_BYTES" || usage_error "WA_ROTATE_BYTES must be a byte count"
    bound=$WA_ROTATE_BYTES
fi
is_count "$KEEP" || usage_error "WA_ARCHIVE_KEEP must be a number"

[ -d "$LOG_DIR" ] || fail "log directory $LOG_DIR does not exist"
if [ ! -d "$ARCHIVE_DIR" ]; then
    mkdir -p "$ARCHIVE_DIR" || fail "cannot create archive directory $ARCHIVE_DIR"
fi

ts=$(date -u +%Y%m%dT%H%M%SZ)
rotated=0
rotated_names=

# 1. Rotate the live logs above the bound.
for f in "$LOG_DIR"/*; do
    [ -f "$f" ] && [ ! -L "$f" ] || continue
    name=${f##*/}
    size=$(stat -c %s "$f") || fail "cannot stat $f"
    [ "$size" -gt "$bound" ] || continue

    dest="$ARCHIVE_DIR/$name.$ts.gz"
    i=1
    while [ -e "$dest" ]; do
        dest="$ARCHIVE_DIR/$name.$ts-$i.gz"
        i=$((i + 1))
    done
    part="$ARCHIVE_DIR/.$name.$ts.part"
    if ! gzip -c "$f" > "$part"; then
        rm -f "$part" 2>/dev/null
        fail "cannot compress $name into $ARCHIVE_DIR"
    fi
    mv -f "$part" "$dest" || fail "cannot move the archive of $name to $dest"
    : > "$f" || fail "cannot truncate $f"
    echo "rotated $name -> archive/${dest##*/} ($size bytes)"
    rotated=$((rotated + 1))
    rotated_names="${rotated_names:+$rotated_names, }$name"
done

# 2. Keep only the newest $KEEP archived files of each log.
listing=$(ls -1t "$ARCHIVE_DIR") || fail "cannot list $ARCHIVE_DIR"
files=
seen=0
while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    [ -f "$ARCHIVE_DIR/$entry" ] || continue
    seen=$((seen + 1))
    files="$files$entry
"
done <<LISTING
$listing
LISTING
# Newest first: past the first $KEEP of a log, every file of that log expires.
expired=$(printf '%s' "$files" | awk -v keep="$KEEP" '{
    name = $0
    sub(/\.(gz|bz2|xz|zst|lz4|Z)$/, "", name)
    while (sub(/[._-][0-9][0-9TZ]*$/, "", name) > 0) {}
    if (++kept[name] > keep) print
}') || fail "cannot group $ARCHIVE_DIR by log"
removed=0
while IFS= read -r entry; do
    [ -n "$entry" ] || continue
    rm -f "$ARCHIVE_DIR/$entry" || fail "cannot remove archived file $ARCHIVE_DIR/$entry"
    removed=$((removed + 1))
done <<EXPIRED
$expired
EXPIRED

# 3. Summary.
echo "rotated ${rotated_names:-nothing}; removed $removed archived files;" \
    "archive now $((seen - removed)) files"
exit 0
