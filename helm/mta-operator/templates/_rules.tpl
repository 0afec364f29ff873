{{/*
The operator's permissions, verb by verb, each rule with why. Namespaced rules go into a Role
per watched namespace, or into the ClusterRole in cluster-wide mode; cluster rules always go into a
ClusterRole. A test checks that `kubectl auth can-i --list` for the ServiceAccount shows exactly these,
and another runs the operator with the ServiceAccount's token against the examples.
*/}}

{{- define "mta-operator.rules.namespaced" -}}
# The three kinds: watched (kopf), status written through the status subresource only.
- apiGroups: ["mta-operator.io"]
  resources: ["clusters", "sendingdomains", "smtpcredentials"]
  verbs: ["list", "watch"]
- apiGroups: ["mta-operator.io"]
  resources: ["clusters/status", "sendingdomains/status", "smtpcredentials/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion: true; where the OwnerReferencesPermissionEnforcement
# admission plugin is on, that needs update on the owner's finalizers. No finalizer is ever written.
- apiGroups: ["mta-operator.io"]
  resources: ["clusters/finalizers", "sendingdomains/finalizers", "smtpcredentials/finalizers"]
  verbs: ["update"]
# Children, by server-side apply (create + patch) after reading the live object (get) to refuse taking
# over objects the operator does not own.
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "create", "patch"]
# The relay settings ConfigMap; list and watch only because the MTA pods' Role grants them on it (their
# config watcher follows it by name).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# Secrets: the operator's own (listed at start-up), users' TLS and password Secrets (get), DKIM keys
# (create), credential table shards no longer needed (delete); watch only because the MTA pods' Role
# grants it on their table Secrets, and RBAC lets nobody grant what they do not hold.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The MTA StatefulSet: readiness is followed by a watch.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The MTA Deployment of an older release: removed once its pods' queues are delivered.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "delete"]
# MTA pod IPs, to ask a leaving MTA for its queue and to tell it its peers during a scale-down.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Spool volumes: checked for binding; a removed MTA's volume is deleted once it reported its queue empty.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "delete"]
# Removed again when mtas drops to 1.
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch", "delete"]
# The MTA pods' Role (read their credential table Secrets, by name) and its binding. Granting a Role
# needs the operator to hold its permissions (secrets get/list/watch) or `bind`/`escalate`.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch"]
# TLS from spec.tls.issuerRef (only used when cert-manager is installed).
- apiGroups: ["cert-manager.io"]
  resources: ["certificates"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "mta-operator.rules.cluster" -}}
# kopf lists and watches namespaces even when told which one to serve (names only; without it, it retries
# at every start).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
# kopf notices CRDs appearing and changing (without it, only at restart).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# spec.queue.storage.storageClassName is checked to exist (a clear condition instead of a Pending volume).
- apiGroups: ["storage.k8s.io"]
  resources: ["storageclasses"]
  verbs: ["get"]
{{- end -}}
