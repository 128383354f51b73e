#!/usr/bin/env bash
# Install the proxies `cargo bench --bench e2e` compares sni-router with, on a
# Debian 12 machine, as root:
#
#   * haproxy 2.6                        -> /usr/sbin/haproxy   (mode tcp, req.ssl_sni)
#   * nginx 1.22 + libnginx-mod-stream   -> /usr/sbin/nginx     (stream, ssl_preread)
#   * sniproxy 0.6                       -> /usr/sbin/sniproxy
#
# The bench writes its own configuration for each and starts each as its own
# child process on free loopback ports. The packages' system services are not
# wanted: they would hold ports 80/443 and cost CPU during the measurements. So
# package scripts are kept from starting them (policy-rc.d exit 101 while
# installing), and afterwards each service is stopped and disabled if an init
# system started or enabled it anyway.
#
# Idempotent: a package already installed is not touched; a second run takes
# about a second. Prints what it did; exits non-zero on failure.
set -Eeuo pipefail

PACKAGES=(haproxy nginx libnginx-mod-stream sniproxy)
SERVICES=(haproxy nginx sniproxy)
POLICY=/usr/sbin/policy-rc.d

say() { printf 'install-bench-peers: %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }
trap 'say "error: failed at line $LINENO: $BASH_COMMAND" >&2' ERR

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get is needed)"

missing=()
for pkg in "${PACKAGES[@]}"; do
    if [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true) != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    # Keep maintainer scripts from starting the services (invoke-rc.d honours
    # policy-rc.d; exit 101 = "action forbidden"). An existing policy file is
    # left as it is; ours is removed again on the way out.
    own_policy=no
    if [[ ! -e $POLICY ]]; then
        printf '#!/bin/sh\n# written by sni-router scripts/install-bench-peers.sh while installing\nexit 101\n' >"$POLICY"
        chmod 755 "$POLICY"
        own_policy=yes
        trap '[[ $own_policy == yes ]] && rm -f "$POLICY"' EXIT
    fi
    say "apt-get update"
    apt-get update -qq
    say "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "already installed: ${PACKAGES[*]}"
fi

# Whatever the install did, leave no system service of these running or enabled.
systemd=no
if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
    systemd=yes
fi
for svc in "${SERVICES[@]}"; do
    if [[ $systemd == yes ]]; then
        if systemctl is-active --quiet "$svc" 2>/dev/null; then
            say "stopping system service $svc"
            systemctl stop "$svc"
        fi
        if systemctl is-enabled --quiet "$svc" 2>/dev/null; then
            say "disabling system service $svc"
            systemctl disable --quiet "$svc"
        fi
    elif [[ -x /etc/init.d/$svc ]]; then
        # sysvinit or no init at all: the init script knows its own pid file.
        if /etc/init.d/"$svc" status >/dev/null 2>&1; then
            say "stopping system service $svc"
            /etc/init.d/"$svc" stop >/dev/null 2>&1 || say "warning: could not stop $svc"
        fi
        if command -v update-rc.d >/dev/null && compgen -G "/etc/rc[2-5].d/S*$svc" >/dev/null; then
            say "disabling system service $svc"
            update-rc.d "$svc" disable >/dev/null 2>&1 || true
        fi
    fi
done

# nginx loads modules from modules-enabled; the bench's own config loads the
# stream module by path, so only check that the file is there.
stream_mod=/usr/lib/nginx/modules/ngx_stream_module.so
[[ -f $stream_mod ]] || die "$stream_mod missing after installing libnginx-mod-stream"

say "haproxy:  $(haproxy -v 2>/dev/null | head -n1)"
say "nginx:    $(nginx -v 2>&1 | head -n1)"
say "sniproxy: $(sniproxy -V 2>&1 | head -n1 || true)"
