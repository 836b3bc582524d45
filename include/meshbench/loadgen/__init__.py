"""Load generators that write Fortio-shaped results: the Fortio REST client for
Kubernetes (``fortio``) and the local environment's generator."""
