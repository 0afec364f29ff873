"""Every option the chart's values.yaml documents, as values cases for the render and dry-run tests."""

from __future__ import annotations

# Every option values.yaml documents, each set to something other than its default (a test checks
# that no documented key is left out, so a new value needs a case here and a dry run on the server).
OPTIONS: dict[str, dict] = {
    "image": {"image": {"repository": "registry.example/mta", "tag": "1.2.3", "pullPolicy": "Always"}},
    "imagePullSecrets": {"imagePullSecrets": [{"name": "regcred"}]},
    "crds": {"crds": {"install": False}},
    "watchNamespaces": {"watchNamespaces": ["mail"]},
    "replicas": {"replicas": 1},
    "serviceAccount": {"serviceAccount": {"create": True, "name": "mta-op",
                                          "annotations": {"a.example/b": "c"}}},
    "rbac": {"rbac": {"create": False}},
    "logLevel": {"logLevel": "DEBUG"},
    "healthPort": {"healthPort": 9090},
    "resources": {"resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}}},
    "podAnnotations": {"podAnnotations": {"example.com/note": "x"}},
    "podLabels": {"podLabels": {"team": "mail"}},
    "nodeSelector": {"nodeSelector": {"kubernetes.io/os": "linux"}},
    "tolerations": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mail",
                                     "effect": "NoSchedule"}]},
    "affinity": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 1, "preference": {"matchExpressions": [
            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}}]}}},
    "priorityClassName": {"priorityClassName": "system-cluster-critical"},
    "metricsPort": {"metricsPort": 9091},
    "podMonitor": {"podMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}},
    "prometheusRules": {"prometheusRules": {
        "enabled": True, "labels": {"release": "prom"}, "notReadyFor": "10m",
        "queueOldestMessageAgeSeconds": 7200, "deliveryFailureRatio": 0.5, "authFailuresPerSecond": 5,
        "spoolAvailableRatio": 0.2,
        "certificateExpiryDays": 21, "destinationSuspendedFor": "45m", "operatorDownFor": "15m"}},
    "grafanaDashboard": {"grafanaDashboard": {"enabled": True, "namespace": "mail",
                                              "labels": {"team": "mail"},
                                              "annotations": {"grafana_folder": "Mail"}}},
    "test": {"test": {"namespace": "mail", "credential": "billing", "connectionSecret": "billing-smtp",
                      "from": "check@example.com", "to": "postmaster@example.net",
                      "caSecret": "main-mta-ca"}},
}
