"""The Kubernetes CRI v1 API, vendored: ``api.proto`` is k8s.io/cri-api v0.36.3
(https://github.com/kubernetes/cri-api/blob/v0.36.3/pkg/apis/runtime/v1/api.proto, commit
1733b6a9fa123c5887eefa14523c532b12827f73; Apache-2.0, see LICENSE here).

Its Python stubs are generated on first use by :func:`tests.support.cri.stubs` (grpcio-tools,
the dev extra) into a cache outside the clone, so no generated code is committed.
"""
