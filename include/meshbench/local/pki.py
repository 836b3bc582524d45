"""A certificate authority made per run and the sidecars' workload certificates.

Identities are SPIFFE URIs, the way Istio and Kuma name workloads; each sidecar checks the
other's URI, so a certificate from the right CA for the wrong workload is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshbench.meshes.pki import CLOCK_SKEW, self_signed_ca

VALIDITY = dt.timedelta(days=2)


@dataclass(frozen=True)
class Issued:
    certificate_pem: bytes
    private_key_pem: bytes


def trust_domain(prefix: str) -> str:
    return f"{prefix}.meshbench.local"


def spiffe_id(prefix: str, namespace: str, service_account: str) -> str:
    return f"spiffe://{trust_domain(prefix)}/ns/{namespace}/sa/{service_account}"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(prefix: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = self_signed_ca(key, f"meshbench local CA {prefix}", VALIDITY, path_length=0)
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_workload(ca: Issued, identity: str, dns_names: list[str]) -> Issued:
    """A leaf for a sidecar, valid for both TLS roles (sidecars are clients and servers)."""
    ca_certificate = x509.load_pem_x509_certificate(ca.certificate_pem)
    ca_key = serialization.load_pem_private_key(ca.private_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity)]
    names += [x509.DNSName(name) for name in dns_names]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshbench")]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_certificate.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Issued(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))
