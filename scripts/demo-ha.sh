#!/usr/bin/env bash
# make demo-ha: two signerd nodes, each with its own HSM token holding the
# same issuing key, on one PostgreSQL primary with a synchronous standby.
# Certificates are issued through both nodes; the primary is killed and the
# standby promoted, and the nodes carry on without a restart; then node a is
# killed and node b answers for everything. Every certificate is still
# there, and every node's audit chain verifies (README, "Several nodes").
#
# Run from the repository root by `make demo-ha` (which builds bin/ and the
# SoftHSM2 with SM2 first). Everything lives in ./demo-ha; the PostgreSQL
# servers listen on Unix sockets only and run as the postgres user when
# this runs as root (PostgreSQL refuses to run as root).
set -euo pipefail

DEMO=${DEMO:-$PWD/demo-ha}
ROOM=$DEMO/ceremonies
PG=$DEMO/pg
RUN=$PG/run
SIGNERCTL=$PWD/bin/signerctl
SIGNERD=$PWD/bin/signerd
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
: "${SIGNERD_SOFTHSM_SM2:?the SoftHSM2 build with SM2 (make demo-ha sets it)}"

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
psql_on() { # port sql...
	local port=$1
	shift
	as_pg "$PGBIN/psql" -X -q -t -A -h "$RUN" -p "$port" -U postgres -d postgres "$@"
}
# until_ok tries a command for up to 30 s: a request sent while the
# database fails over is answered 503 store_unavailable, and is retried.
until_ok() {
	for _ in $(seq 150); do
		"$@" 2>/dev/null && return 0
		sleep 0.2
	done
	"$@"
}
stop_all() {
	for n in a b; do
		[ -f "$DEMO/$n.pid" ] && kill "$(cat "$DEMO/$n.pid")" 2>/dev/null || true
	done
	for d in primary standby; do
		[ -f "$PG/$d/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$PG/$d" -m immediate stop >/dev/null 2>&1 || true
	done
}
trap stop_all EXIT

rm -rf "$DEMO" && mkdir -m 711 -p "$DEMO" && mkdir -m 700 -p "$DEMO/tokens" "$ROOM"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$DEMO/tokens" >"$DEMO/softhsm2.conf"
export SOFTHSM2_CONF=$DEMO/softhsm2.conf
cp docs/ceremonies/0[1-4]-*.yaml docs/ceremonies/0[6-8]-*.yaml "$ROOM/"
(umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$ROOM/so.pin" &&
	od -An -N12 -tx1 /dev/urandom | tr -d ' \n' >"$ROOM/chen-jie.passphrase")

echo "== 1. ceremonies: token ca with the root and issuing keys; the issuing key backed up and"
echo "      restored into a second token, ca-standby, for the second node"
for c in 01-token-init 02-root 03-issuing-key 04-issuing-cert 06-backup 07-token-init-standby 08-restore; do
	"$SIGNERCTL" ceremony run "$ROOM/$c.yaml" | tail -n 1
done
cp "$ROOM/root-2026.pem" "$DEMO/root.pem" && cp "$ROOM/issuing-2026.pem" "$DEMO/issuing.pem"

echo "== 2. PostgreSQL: a primary and a streaming standby it waits for at every commit"
mkdir -p "$RUN" && [ "$(id -u)" != 0 ] || chown -R postgres "$PG"
as_pg "$PGBIN/initdb" -D "$PG/primary" -U postgres -A trust --no-sync >/dev/null
cat >>"$PG/primary/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$RUN'
port = 5441
wal_level = replica
max_wal_senders = 4
synchronous_commit = on
EOF
as_pg "$PGBIN/pg_ctl" -D "$PG/primary" -l "$PG/primary.log" -w start >/dev/null
psql_on 5441 -c "CREATE ROLE signerd LOGIN" -c "CREATE DATABASE signerd OWNER signerd"
as_pg "$PGBIN/pg_basebackup" -d "host=$RUN port=5441 user=postgres application_name=standby" -D "$PG/standby" -R -X stream
echo "port = 5442" >>"$PG/standby/postgresql.conf"
as_pg "$PGBIN/pg_ctl" -D "$PG/standby" -l "$PG/standby.log" -w start >/dev/null
# Named only once the standby streams: from then on every commit waits for it.
psql_on 5441 -c "ALTER SYSTEM SET synchronous_standby_names = 'standby'" -c "SELECT pg_reload_conf()" >/dev/null
standby_is_sync() {
	test "$(psql_on 5441 -c "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'")" = sync
}
until_ok standby_is_sync
psql_on 5441 -c "SELECT 'standby ' || application_name || ': ' || state || ', ' || sync_state FROM pg_stat_replication"
"$SIGNERCTL" store upgrade --dsn "host=$RUN port=5441 dbname=signerd user=signerd"

echo "== 3. signerd nodes a (token ca) and b (token ca-standby); their DSN names both servers"
DSN="host=$RUN,$RUN port=5441,5442 dbname=signerd user=signerd target_session_attrs=read-write"
node_config() { # name token shares...
	local name=$1 token=$2
	shift 2
	local shares
	shares=$(printf '%s, ' "$@")
	printf '%s\n' "node: $name" \
		"hsm: {module: $SIGNERD_SOFTHSM_SM2, token: $token, pin_shares: [${shares%, }]," \
		"  pin_refused_marker: $DEMO/$name.pin-refused}" \
		"issuers: [{key: issuing-2026, certificate: $DEMO/issuing.pem}]" \
		"store: {postgres: {dsn: \"$DSN\", timeout: 5s, node_lease: 5s}}" \
		"socket: {path: $DEMO/$name.sock}" \
		"audit: {seal_every: 4}" \
		"roles: {ra: {uids: [$(id -u)]}, operator: {uids: [$(id -u)]}, auditor: {uids: [$(id -u)]}}" \
		>"$DEMO/$name.yaml"
}
node_config a ca "$ROOM/pin-share-1.pem" "$ROOM/pin-share-2.pem" "$ROOM/pin-share-4.pem"
node_config b ca-standby "$ROOM/standby-pin-share-1.pem" "$ROOM/standby-pin-share-3.pem"
for n in a b; do
	"$SIGNERD" --config "$DEMO/$n.yaml" 2>"$DEMO/$n.log" &
	echo $! >"$DEMO/$n.pid"
	disown # its SIGKILL below is the demo's, not news for the shell
	SIGNERD_SOCKET=$DEMO/$n.sock until_ok "$SIGNERCTL" health >/dev/null
	echo "node $n: $(SIGNERD_SOCKET=$DEMO/$n.sock "$SIGNERCTL" health)"
done

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out "$DEMO/person.key" 2>/dev/null
openssl req -new -key "$DEMO/person.key" -sm3 -sigopt distid:1234567812345678 -subj "/CN=applicant" -out "$DEMO/person.csr"
: >"$DEMO/issued"
issue() { # node request-id
	SIGNERD_SOCKET=$DEMO/$1.sock "$SIGNERCTL" issue -request-id "$2" -profile person-sign -subject "CN=$2,C=CN" \
		-csr "$DEMO/person.csr" -identity resident-id=11010519491231002X -out "$DEMO/$2.pem" &&
		openssl x509 -in "$DEMO/$2.pem" -noout -serial | cut -d= -f2 >"$DEMO/$2.serial"
}
issued() { # node request-id
	until_ok issue "$1" "$2"
	echo "$2 $(cat "$DEMO/$2.serial")" >>"$DEMO/issued"
	echo "   $2 through node $1: serial $(cat "$DEMO/$2.serial")"
}

echo "== 4. the RA issues through both nodes"
for i in 1 2 3; do issued a "before-a-$i" && issued b "before-b-$i"; done

echo "== 5. the primary is killed; the standby is promoted (and, alone now, commits without waiting for a standby)"
as_pg "$PGBIN/pg_ctl" -D "$PG/primary" -m immediate stop >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PG/standby" -w promote >/dev/null
psql_on 5442 -c "ALTER SYSTEM SET synchronous_standby_names = ''" -c "SELECT pg_reload_conf()" >/dev/null
echo "   the nodes carry on, without a restart:"
for i in 1 2; do issued a "after-failover-a-$i" && issued b "after-failover-b-$i"; done

echo "== 6. node a is killed (SIGKILL); node b answers for everything"
kill -KILL "$(cat "$DEMO/a.pid")" && rm "$DEMO/a.pid"
echo "   a retry at b of a request a issued returns a's certificate:"
SIGNERD_SOCKET=$DEMO/b.sock "$SIGNERCTL" issue -request-id before-a-1 -profile person-sign -subject "CN=before-a-1,C=CN" \
	-csr "$DEMO/person.csr" -identity resident-id=11010519491231002X -out "$DEMO/retry.pem" >/dev/null
cmp "$DEMO/retry.pem" "$DEMO/before-a-1.pem" && echo "   same certificate, serial $(cat "$DEMO/before-a-1.serial")"
issued b after-node-loss-1
echo "   every certificate issued is there, as node b reads it:"
while read -r id serial; do
	status=$(SIGNERD_SOCKET=$DEMO/b.sock "$SIGNERCTL" status -serial "$serial" | grep -o '"status": *"[a-z]*"')
	echo "   $id $serial $status"
	openssl verify -vfyopt distid:1234567812345678 -partial_chain -CAfile "$DEMO/issuing.pem" "$DEMO/$id.pem" >/dev/null
done <"$DEMO/issued"
echo "   (each verified by OpenSSL 3 against the issuing CA)"

echo "== 7. the records, checked in the database, and every node's audit chain, exported through b and verified"
"$SIGNERCTL" store verify --dsn "host=$RUN port=5442 dbname=signerd user=signerd"
SIGNERD_SOCKET=$DEMO/b.sock "$SIGNERCTL" audit export --root "$DEMO/root.pem" --out "$DEMO/audit.jsonl" >/dev/null
"$SIGNERCTL" audit verify --root "$DEMO/root.pem" --nodes a,b "$DEMO/audit.jsonl"
