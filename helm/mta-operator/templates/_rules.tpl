{{/*
The operator's permissions, verb by verb as docs/rbac.md lists them (a test compares what the
ServiceAccount can do with that page). Namespaced rules go into a Role per watched namespace, or into
the ClusterRole in cluster-wide mode; cluster rules always go into a ClusterRole.
*/}}

{{- define "mta-operator.rules.namespaced" -}}
- apiGroups: ["mta-operator.io"]
  resources: ["clusters", "sendingdomains", "smtpcredentials"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["mta-operator.io"]
  resources: ["clusters/status", "sendingdomains/status", "smtpcredentials/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["secrets", "configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "mta-operator.rules.cluster" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- end -}}
