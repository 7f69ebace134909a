#!/bin/sh
# Main process of the wa-standin image: creates the role's live logs under /var/log/whatsapp,
# prints "wa-standin ready role=<role>" on stdout, then idles in a sleep loop. With
# WA_LOG_WRITER=1 it appends one line to every live log each WA_LOG_INTERVAL seconds and
# prints "wa-standin wrote <n>" after each round. SIGTERM/SIGINT end it at once (exit 0).

LOG_DIR=/var/log/whatsapp
ARCHIVE_DIR="$LOG_DIR/archive"
role=${WA_ROLE:-webapp}
interval=${WA_LOG_INTERVAL:-1}

case "$role" in
    webapp) logs="web.log access.log error.log" ;;
    coreapp|master) logs="$role.log wa-service-$role.log" ;;
    *) echo "wa-standin: unknown WA_ROLE '$role' (webapp|coreapp|master)" >&2; exit 2 ;;
esac

child=
on_term() {
    [ -n "$child" ] && kill "$child" 2>/dev/null
    echo "wa-standin stopping"
    exit 0
}
trap on_term TERM INT

mkdir -p "$ARCHIVE_DIR"
for f in $logs; do
    [ -e "$LOG_DIR/$f" ] || : > "$LOG_DIR/$f"
done

n=0
write_round() {
    n=$((n + 1))
    now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    for f in $logs; do
        echo "$now [$role] stand-in log line $n" >> "$LOG_DIR/$f"
    done
    echo "wa-standin wrote $n"
}

[ "$WA_LOG_WRITER" = 1 ] && write_round
echo "wa-standin ready role=$role"

while :; do
    # Sleep in the background and `wait`: a trapped signal interrupts `wait` immediately.
    sleep "$interval" &
    child=$!
    wait "$child"
    child=
    [ "$WA_LOG_WRITER" = 1 ] && write_round
done
