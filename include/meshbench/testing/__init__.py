"""Fakes for the outside world the build machines do not have, for tests only.

``fake_kube`` stands in for the Kubernetes API (there is no cluster here), ``fake_fortio``
for a Fortio server (no Fortio binary can be installed) and ``fake_kubectl`` for the
``kubectl port-forward`` process. Production code never imports this package.
"""
