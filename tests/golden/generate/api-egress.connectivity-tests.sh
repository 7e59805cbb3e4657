#!/usr/bin/env bash
# Connectivity tests for the policies generated from api-egress.yaml by `netpol-guard generate`.
# Runs against the current kubectl context; apply the policies first.
#
#   ./connectivity-tests.sh            # prints a table, exit 0 = every check as expected
#
# Exit status: 0 all as expected; 1 at least one FAIL (a flow that should connect did not,
# or one that should be blocked connected); 2 no FAIL but some checks could not run
# (NO-POD: no running pod; NO-TOOL: the image has no nc/curl/wget/bash; ERROR: kubectl exec
# failed). UDP flows other than DNS cannot be probed reliably and are listed as SKIP; so is
# a flow whose only destination pod is the source pod itself (a pod reaching its own IP is
# not subject to NetworkPolicy): the probe always uses a destination pod other than the source.
#
# Environment: KUBECTL (default kubectl), PROBE_TIMEOUT seconds (default 2),
# DNS_NAME (default kubernetes.default.svc.cluster.local).
set -u
KUBECTL="${KUBECTL:-kubectl}"
TIMEOUT="${PROBE_TIMEOUT:-2}"
DNS_NAME="${DNS_NAME:-kubernetes.default.svc.cluster.local}"
PASSED=0; FAILED=0; UNKNOWN=0; SKIPPED=0
ROWS=()

# Runs inside the source pod: prints open (a TCP connection was made), closed or no-tool.
# curl: a non-zero connect time means connected, whatever HTTP said afterwards; wget:
# "connected." (GNU) or an HTTP-level error (busybox) means connected.
# shellcheck disable=SC2016
PROBE='h=$1; p=$2; t=$3
case "$h" in *:*) u="[$h]";; *) u="$h";; esac
if command -v nc >/dev/null 2>&1 && nc -h 2>&1 | grep -q -- "-z"; then
  if nc -z -w "$t" "$h" "$p" >/dev/null 2>&1; then echo open; else echo closed; fi; exit 0
fi
if command -v curl >/dev/null 2>&1; then
  c=$(curl -s -o /dev/null -w "%{time_connect}" --connect-timeout "$t" --max-time "$t" "http://$u:$p/" 2>/dev/null)
  case "$c" in *[1-9]*) echo open;; *) echo closed;; esac; exit 0
fi
if command -v wget >/dev/null 2>&1; then
  out=$(wget -t 1 -T "$t" -O /dev/null "http://$u:$p/" 2>&1); rc=$?
  if [ "$rc" -eq 0 ]; then echo open; exit 0; fi
  case "$out" in *"connected."*|*"server returned"*|*"bad header"*|*"error getting response"*) echo open;; *) echo closed;; esac
  exit 0
fi
if command -v bash >/dev/null 2>&1 && command -v timeout >/dev/null 2>&1; then
  if timeout "$t" bash -c "exec 3<>/dev/tcp/$h/$p" >/dev/null 2>&1; then echo open; else echo closed; fi; exit 0
fi
echo no-tool'

# Runs inside the pod: prints open (resolved), closed or no-tool.
DNS_PROBE='n=$1
if command -v nslookup >/dev/null 2>&1; then
  if nslookup "$n" >/dev/null 2>&1; then echo open; else echo closed; fi; exit 0
fi
if command -v getent >/dev/null 2>&1; then
  if getent hosts "$n" >/dev/null 2>&1; then echo open; else echo closed; fi; exit 0
fi
echo no-tool'

# first_pod NS SELECTOR FIELD: a running pod's name or IP ("" selector: any pod of NS)
first_pod() {
  local sel=()
  [ -n "$2" ] && sel=(-l "$2")
  # ${a[@]+...}: an empty array under `set -u` is an error in bash 3 (macOS)
  "$KUBECTL" get pods -n "$1" ${sel[@]+"${sel[@]}"} --field-selector=status.phase=Running \
    -o "jsonpath={.items[0].$3}" 2>/dev/null
}

# other_pod NS SELECTOR EXCLUDE: the IP of a running pod other than the pod named EXCLUDE.
# A pod's connection to its own IP never passes through NetworkPolicy, so probing a flow
# from a pod to itself would pass without testing anything.
other_pod() {
  local sel=()
  [ -n "$2" ] && sel=(-l "$2")
  "$KUBECTL" get pods -n "$1" ${sel[@]+"${sel[@]}"} --field-selector=status.phase=Running \
    -o 'jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}' 2>/dev/null \
    | awk -v skip="$3" '$1 != skip && $2 != "" { print $2; exit }'
}

record() {  # RESULT EXPECT FROM TO PORT DETAIL
  case "$1" in
    PASS) PASSED=$((PASSED + 1));; FAIL) FAILED=$((FAILED + 1));;
    SKIP) SKIPPED=$((SKIPPED + 1));; *) UNKNOWN=$((UNKNOWN + 1));;
  esac
  ROWS+=("$(printf '%-8s %-7s %-40s %-40s %-10s %s' "$1" "$2" "$3" "$4" "$5" "$6")")
}

outcome() {  # EXPECT GOT -> result word
  case "$2" in
    no-tool) echo NO-TOOL;; open|closed) if [ "$1" = "$2" ]; then echo PASS; else echo FAIL; fi;;
    *) echo ERROR;;
  esac
}

# check EXPECT SRC_NS SRC_SEL SRC_LABEL DST_NS DST_SEL DST_LABEL ADDRESS PORT PROTO
check() {
  local expect=$1 sns=$2 ssel=$3 slabel=$4 dns=$5 dsel=$6 dlabel=$7 addr=$8 port=$9 proto=${10}
  local pod target got
  if [ "$proto" != TCP ]; then
    record SKIP "$expect" "$slabel" "$dlabel" "$port/$proto" "$proto cannot be probed reliably"; return
  fi
  pod=$(first_pod "$sns" "$ssel" metadata.name)
  if [ -z "$pod" ]; then record NO-POD "$expect" "$slabel" "$dlabel" "$port/$proto" "no running source pod"; return; fi
  target=$addr
  if [ -z "$target" ]; then
    local self=""
    [ "$dns" = "$sns" ] && self=$pod
    target=$(other_pod "$dns" "$dsel" "$self")
    if [ -z "$target" ] && [ -n "$self" ] && [ -n "$(first_pod "$dns" "$dsel" metadata.name)" ]; then
      record SKIP "$expect" "$slabel" "$dlabel" "$port/$proto" \
        "$pod is the only destination pod: a pod reaching itself is not subject to NetworkPolicy (run 2 replicas to test)"
      return
    fi
    if [ -z "$target" ]; then record NO-POD "$expect" "$slabel" "$dlabel" "$port/$proto" "no running destination pod"; return; fi
  fi
  got=$("$KUBECTL" exec -n "$sns" "$pod" -- sh -c "$PROBE" probe "$target" "$port" "$TIMEOUT" 2>/dev/null | tail -n 1)
  record "$(outcome "$expect" "$got")" "$expect" "$slabel" "$dlabel" "$port/$proto" "$pod -> $target: ${got:-exec failed}"
}

# check_dns NS SEL LABEL
check_dns() {
  local pod got
  pod=$(first_pod "$1" "$2" metadata.name)
  if [ -z "$pod" ]; then record NO-POD open "$3" DNS 53 "no running pod"; return; fi
  got=$("$KUBECTL" exec -n "$1" "$pod" -- sh -c "$DNS_PROBE" probe "$DNS_NAME" 2>/dev/null | tail -n 1)
  record "$(outcome open "$got")" open "$3" "DNS $DNS_NAME" 53 "$pod: ${got:-exec failed}"
}


# --- allowed flows: must connect (2)
check open payments app.kubernetes.io/name=api payments/api payments app.kubernetes.io/name=postgres payments/postgres '' 5432 TCP
check open payments app.kubernetes.io/name=api payments/api payments app.kubernetes.io/name=redis payments/redis '' 6379 TCP

# --- a sample of flows the map does not allow: must not connect (2)
check closed payments app.kubernetes.io/name=postgres payments/postgres payments app.kubernetes.io/name=api payments/api '' 8443 TCP
check closed payments app.kubernetes.io/name=redis payments/redis payments app.kubernetes.io/name=api payments/api '' 8443 TCP

# --- DNS from every workload (3)
check_dns payments app.kubernetes.io/name=api payments/api
check_dns payments app.kubernetes.io/name=postgres payments/postgres
check_dns payments app.kubernetes.io/name=redis payments/redis

# --- the cloud metadata address: must not connect (1)
check closed payments app.kubernetes.io/name=api payments/api '' '' cloud-metadata 169.254.169.254 80 TCP

printf '%-8s %-7s %-40s %-40s %-10s %s\n' RESULT EXPECT FROM TO PORT DETAIL
for row in ${ROWS[@]+"${ROWS[@]}"}; do printf '%s\n' "$row"; done
printf '\n%d passed, %d failed, %d could not run, %d skipped\n' "$PASSED" "$FAILED" "$UNKNOWN" "$SKIPPED"
if [ "$FAILED" -gt 0 ]; then exit 1; fi
if [ "$UNKNOWN" -gt 0 ]; then exit 2; fi
exit 0
