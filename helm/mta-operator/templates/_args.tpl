{{/* Arguments of `mta-operator run`: what it watches, the image of the MTA pods, health, metrics, log level.
     Health and metrics listen on the pod's IP (POD_IP), as the MTAs do: probes and Prometheus reach it
     there, and pods that share a network namespace (the project's test bed) do not take each other's ports. */}}
{{- define "mta-operator.args" -}}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
- --leader-election-namespace={{ .Release.Namespace }}
- --leader-election-name={{ include "mta-operator.fullname" . }}
- --relay-image={{ include "mta-operator.image" . }}
- --image-pull-policy={{ .Values.image.pullPolicy }}
- --liveness=http://$(POD_IP):{{ .Values.healthPort }}/healthz
- --metrics-port={{ .Values.metricsPort }}
- --metrics-address=$(POD_IP)
- --log-level={{ .Values.logLevel }}
{{- end -}}
