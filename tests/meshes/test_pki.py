"""The Istio plug-in CA: root -> per-cluster intermediate -> workload certificate verifies."""

from __future__ import annotations

import base64
import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from meshbench.meshes.pki import CACERTS_KEYS, cacerts_secret, issue_chains, new_root


@pytest.fixture(scope="module")
def chains() -> dict[str, dict[str, bytes]]:
    return issue_chains({"client": "cluster1", "server": "cluster2"})


def workload_certificate(files: dict[str, bytes], spiffe_id: str) -> x509.Certificate:
    """What istiod does with the intermediate: a short-lived certificate whose only name is
    the workload's SPIFFE id, for client and server TLS."""
    issuer = x509.load_pem_x509_certificate(files["ca-cert.pem"])
    issuer_key = serialization.load_pem_private_key(files["ca-key.pem"], password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=24))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def verify(
    root_pem: bytes, intermediate_pem: bytes, leaf: x509.Certificate
) -> list[x509.Certificate]:
    store = Store([x509.load_pem_x509_certificate(root_pem)])
    verifier = PolicyBuilder().store(store).build_client_verifier()
    verified = verifier.verify(leaf, [x509.load_pem_x509_certificate(intermediate_pem)])
    return verified.chain


@pytest.mark.parametrize("role", ["client", "server"])
def test_a_workload_certificate_from_each_cluster_verifies_to_the_shared_root(chains, role):
    files = chains[role]
    leaf = workload_certificate(files, f"spiffe://cluster.local/ns/mb-test/sa/{role}")
    chain = verify(files["root-cert.pem"], files["ca-cert.pem"], leaf)
    subjects = [c.subject.rfc4514_string() for c in chain]
    assert len(chain) == 3
    assert "L=cluster" in subjects[1] and "CN=meshbench root CA" in subjects[2]
    # A workload of the other cluster verifies against this cluster's root as well: one
    # trust domain across clusters, which is what cross-cluster mTLS needs.
    other = chains["server" if role == "client" else "client"]
    peer = workload_certificate(other, "spiffe://cluster.local/ns/mb-test/sa/peer")
    assert len(verify(files["root-cert.pem"], other["ca-cert.pem"], peer)) == 3


def test_clusters_share_the_root_but_not_the_intermediate(chains):
    client, server = chains["client"], chains["server"]
    assert client["root-cert.pem"] == server["root-cert.pem"]
    assert client["ca-cert.pem"] != server["ca-cert.pem"]
    assert client["ca-key.pem"] != server["ca-key.pem"]
    for files in chains.values():
        assert files["cert-chain.pem"] == files["ca-cert.pem"] + files["root-cert.pem"]
        intermediate = x509.load_pem_x509_certificate(files["ca-cert.pem"])
        constraints = intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert constraints.ca and constraints.path_length == 0
        usage = intermediate.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
        assert b"BEGIN RSA PRIVATE KEY" in files["ca-key.pem"]


def test_a_certificate_from_an_unrelated_root_does_not_verify(chains):
    stranger = issue_chains({"x": "elsewhere"})["x"]
    leaf = workload_certificate(stranger, "spiffe://cluster.local/ns/a/sa/b")
    with pytest.raises(VerificationError):
        verify(chains["client"]["root-cert.pem"], stranger["ca-cert.pem"], leaf)


def test_the_secret_holds_exactly_istios_four_files(chains):
    secret = cacerts_secret(chains["server"], {"app.kubernetes.io/managed-by": "meshbench"})
    assert secret["metadata"]["name"] == "cacerts"
    assert secret["metadata"]["namespace"] == "istio-system"
    assert (
        set(secret["data"])
        == set(CACERTS_KEYS)
        == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}
    )
    decoded = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert decoded == chains["server"]


def test_the_key_never_shows_in_a_repr():
    assert "PRIVATE" not in repr(new_root()) and "key=" not in repr(new_root())
