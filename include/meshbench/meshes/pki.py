"""The certificate authorities Istio multi-cluster needs: one shared root, one
intermediate per cluster (istiod signs workload certificates with its cluster's
intermediate, and both sides trust the shared root).

The shape follows Istio's plug-in CA recipe (mesh-recipes.md section 1.2): per cluster a
Secret ``cacerts`` in ``istio-system`` with ``ca-cert.pem`` (the intermediate),
``ca-key.pem`` (its key), ``root-cert.pem`` and ``cert-chain.pem`` (intermediate then
root). Keys are RSA 2048 rather than the sample's 4096: the CA lives for one iteration.
Private keys exist only in memory and in those Secrets; nothing here logs or returns them.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

CACERTS_SECRET = "cacerts"
CACERTS_KEYS = ("ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem")
KEY_SIZE = 2048
VALIDITY = datetime.timedelta(days=3650)  # as Istio's sample Makefile; the CA is per run
CLOCK_SKEW = datetime.timedelta(minutes=5)  # valid from a little earlier than now
ORGANIZATION = "meshbench"


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey = field(repr=False)

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


def _name(common_name: str, locality: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if locality:
        parts.append(x509.NameAttribute(NameOID.LOCALITY_NAME, locality))
    parts.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(parts)


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def self_signed_ca(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    validity: datetime.timedelta,
    path_length: int | None,
    now: datetime.datetime | None = None,
) -> x509.Certificate:
    """A root CA certificate for ``key``; ``path_length`` 0: it signs end entities only."""
    now = now or datetime.datetime.now(datetime.UTC)
    name = _name(common_name)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def new_root(now: datetime.datetime | None = None) -> Authority:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    return Authority(self_signed_ca(key, "meshbench root CA", VALIDITY, None, now), key)


def new_intermediate(
    root: Authority, cluster_name: str, now: datetime.datetime | None = None
) -> Authority:
    """An intermediate for one cluster's istiod; it may sign only end-entity certificates."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_SIZE)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name("Intermediate CA", locality=cluster_name))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        # Istio's sample gives the intermediate istiod's service name.
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("istiod.istio-system.svc")]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root.key.public_key()),
            critical=False,
        )
        .sign(root.key, hashes.SHA256())
    )
    return Authority(certificate, key)


def cacerts_files(root: Authority, intermediate: Authority) -> dict[str, bytes]:
    """The four files of Istio's ``cacerts`` Secret."""
    return {
        "ca-cert.pem": intermediate.certificate_pem,
        "ca-key.pem": intermediate.key_pem(),
        "root-cert.pem": root.certificate_pem,
        "cert-chain.pem": intermediate.certificate_pem + root.certificate_pem,
    }


def cacerts_secret(files: dict[str, bytes], labels: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CACERTS_SECRET, "namespace": "istio-system", "labels": labels},
        "type": "Opaque",
        "data": {name: base64.b64encode(files[name]).decode() for name in CACERTS_KEYS},
    }


def issue_chains(cluster_names: dict[str, str]) -> dict[str, dict[str, bytes]]:
    """A fresh root and one intermediate per cluster role: role -> cacerts files."""
    root = new_root()
    return {
        role: cacerts_files(root, new_intermediate(root, name))
        for role, name in cluster_names.items()
    }
