"""The benchmark's workloads: nginx (server) and Fortio (client), rendered as manifests.

``nginx.render_nginx_conf`` is the one nginx configuration every environment serves (the
local environment runs the same file outside Kubernetes). ``kubernetes.render_workloads``
turns it, the pinned images and the equal requests/limits from the configuration, and the
labels/annotations a mesh asks for into Namespace, ConfigMap, Deployment and Service
manifests.
"""
