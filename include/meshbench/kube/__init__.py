"""The only part of meshbench that talks to Kubernetes.

What the environments and mesh installers use:

- ``access``: ``ConnectionAccess`` (an Airflow ``kubernetes`` connection) and
  ``KubeconfigAccess`` (a kubeconfig another step produced); kubeconfigs are written 0600
  to temporary files that live only as long as the task needs them.
- ``cluster``: ``Clusters`` (the clusters of one task, opened lazily) and ``KubeCluster``
  (server-side ``apply``, ``delete``, CLI ``run``/``kubectl``, ``port_forward`` and the
  ``wait_*`` helpers).
- ``ops``: ``Op`` and ``apply_op``/``wait_op``/``delete_op``/``call_op``:
  one description serves the plan and the run.
- ``runner``: ``CommandRunner`` for kubectl, helm, istioctl, kumactl and clusterctl with
  time limits, logged and redacted command lines.
- ``waits``: ``wait_for`` and the ``*_state`` checks; ``WaitTimeout`` names what was not
  ready.
- ``portforward``: ``PortForward`` handles (stopped by handle, never by process name).
- ``metrics``: metrics-server install check, ``ResourceSampler`` and the CPU-limit rule.

Nothing here imports the Kubernetes client or Airflow at module import time.
"""
