"""The project's local Kubernetes test bed: real control-plane binaries built from the Go module
proxy, started on loopback with a kwok fake node. Run ``python -m testbed --help`` from ``hack/``."""
