"""The benchmark's workloads: nginx (server) and Fortio (client), rendered as manifests.

The nginx configuration is the local environment's (``meshbench.local.nginx``), so every
environment serves the same settings and bytes. ``kubernetes.render_workloads`` combines
it with the pinned images, the equal requests/limits from the configuration and the
labels/annotations a mesh asks for into Namespace, ConfigMap, Deployment and Service
manifests.
"""
