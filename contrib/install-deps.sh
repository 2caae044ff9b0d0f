#!/bin/sh
# Install what sluice needs on a Debian-like machine, only what is missing.
#   install-deps.sh run     build and run
#   install-deps.sh test    + the test tools (default), clang and libFuzzer for the fuzz harnesses,
#                           chromium for the dashboard's browser tests
#   install-deps.sh bench   + the load generator and nginx for comparison
# Without apt-get, prints the list to install by hand and fails.
set -e
what=${1:-test}

build="gcc make pkg-config libevent-dev libssl-dev libyaml-dev libhiredis-dev libjansson-dev"
run="$build python3 curl"
# libFuzzer and the ASan/UBSan runtimes for clang are in libclang-rt-14-dev, which clang
# only recommends (and recommends are not installed): name it.
# chromium: the dashboard's browser tests (headless, driven over the DevTools protocol).
test="$run libcmocka-dev python3-pytest openssl redis-server python3-prometheus-client groff-base systemd \
  clang libclang-rt-14-dev chromium"
bench="$run wrk nginx-light openssl redis-server"
case "$what" in
  run) want=$run ;;
  test) want=$test ;;
  bench) want=$bench ;;
  *) echo "usage: $0 run|test|bench" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "sluice needs these packages (Debian names; install them with your package manager):" >&2
  echo "  $missing" >&2
  echo "  (libevent 2.1 with openssl support, OpenSSL 3, libyaml, hiredis, jansson, pkg-config," >&2
  echo "   cmocka, pytest;" >&2
  echo "   for tests also clang with its libFuzzer/ASan/UBSan runtimes)" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "need root to install:$missing" >&2; exit 1
  fi
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# Packages with services (nginx, systemd) would try to start them when installed; we only
# want the binaries. A policy-rc.d that is already there is left alone.
own_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d'
  own_policy=1
fi
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
[ -n "$own_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
exit 0
