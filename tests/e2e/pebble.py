"""Pebble, Let's Encrypt's test ACME server, on the VM itself: the tests' offline ACME server.

Debian's package lacks the listener certificate upstream ships: the VM makes a CA and a
certificate for 127.0.0.1 (certbot on the VM trusts that CA through tls_acme_ca_bundle). Pebble
resolves the names it validates through the system, so /etc/hosts sends them to the VM's own
address, where nginx answers the HTTP-01 challenge on port 80.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass

from cryptography import x509

from stack import Stack

DIR = "/etc/pebble-test"
UNIT = "pebble-test"
DIRECTORY = "https://127.0.0.1:14000/dir"
# The renewal wrapper's back-off state on the VM (roles/tls: tls_acme_state).
STATE = "/var/lib/sample_app/tls-acme-state.json"
# Refused by Pebble's blocklist: an ACME server that says no.
REFUSED = "refused.test"
SETUP = r"""
set -eu
# What a VM not deployed to yet lacks too (curl: the base role's).
missing=0
for tool in pebble curl openssl; do command -v $tool >/dev/null || missing=1; done
if [ $missing = 1 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q pebble curl openssl >/dev/null
fi
mkdir -p {dir} && cd {dir}
# Python 3.13 verifies strictly: the CA needs its key usage, the leaf its key identifiers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=pebble-listener-ca -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign \
  -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -keyout key.pem -out request.pem 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > san.cnf
openssl x509 -req -in request.pem -CA ca.pem -CAkey ca.key -days 2 -extfile san.cnf \
  -out cert.pem 2>/dev/null
cat > config.json <<EOF
{{"pebble": {{"listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "{dir}/cert.pem", "privateKey": "{dir}/key.pem", "httpPort": 80, "tlsPort": 443,
  "ocspResponderURL": "", "externalAccountBindingRequired": false,
  "domainBlocklist": ["{refused}"], "certificateValidityPeriod": {validity}}}}}
EOF
sed -i '/ {domain}$/d' /etc/hosts && echo "{address} {domain}" >> /etc/hosts
systemctl stop {unit} 2>/dev/null || true
systemctl reset-failed {unit} 2>/dev/null || true
# Pebble forgets every account and certificate when it stops: so does certbot on the VM.
rm -rf /etc/letsencrypt {state}
systemd-run --quiet --unit {unit} -E PEBBLE_VA_NOSLEEP=1 /usr/bin/pebble -config {dir}/config.json
for i in $(seq 50); do curl -sf --cacert ca.pem {directory} >/dev/null && break; sleep 0.2; done
curl -sf --cacert ca.pem https://127.0.0.1:15000/roots/0
"""
STOP = f"""
systemctl stop {UNIT} 2>/dev/null || true
rm -rf /etc/letsencrypt {STATE}
nft delete table inet {UNIT} 2>/dev/null || true
rm -rf {DIR}
"""
# Pebble unreachable for the VM's certbot: connections to its port are reset.
CUT = f"""
nft add table inet {UNIT}
nft add chain inet {UNIT} out '{{ type filter hook output priority 0; }}'
nft add rule inet {UNIT} out tcp dport 14000 reject with tcp reset
"""
MEND = f"nft delete table inet {UNIT}"


@dataclass(frozen=True)
class Pebble:
    stack: Stack
    domain: str
    root: str  # PEM of the root Pebble issues under (new at each start)

    def deploy_vars(self, interval: int) -> dict[str, object]:
        """The acme mode's values against this Pebble, renewal checks every `interval` s."""
        return {
            "tls_mode": "acme",
            "tls_domains": [self.domain],
            "tls_acme_email": f"ops@{self.domain}",
            "tls_acme_directory": DIRECTORY,
            "tls_acme_ca_bundle": f"{DIR}/ca.pem",
            "tls_acme_renew_interval": interval,
            "tls_acme_retry_base": interval,
            "tls_acme_retry_max": 3 * interval,
        }

    def served(self) -> tuple[int, int]:
        """GET /healthz over HTTPS to the VM under the domain, the chain verified against
        Pebble's root: (status, serial of the certificate served)."""
        context = ssl.create_default_context(cadata=self.root)
        request = f"GET /healthz HTTP/1.1\r\nHost: {self.domain}\r\nConnection: close\r\n\r\n"
        with (
            socket.create_connection((self.stack.address, 443), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=self.domain) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(request.encode())
            status_line = tls.makefile("rb").readline().decode()
        return int(status_line.split()[1]), x509.load_der_x509_certificate(der).serial_number

    def cut(self) -> None:
        self.stack.ssh(CUT)

    def mend(self) -> None:
        self.stack.ssh(MEND)


def start(stack: Stack, domain: str, validity: int) -> Pebble:
    """Pebble on the VM, issuing certificates valid `validity` seconds, `domain` resolving to
    the VM."""
    script = SETUP.format(
        dir=DIR, unit=UNIT, refused=REFUSED, validity=validity, domain=domain,
        address=stack.address, directory=DIRECTORY, state=STATE,
    )  # fmt: skip
    root = stack.ssh(script).stdout
    assert "BEGIN CERTIFICATE" in root, root
    return Pebble(stack, domain, root)


def stop(stack: Stack) -> None:
    stack.ssh(STOP)
