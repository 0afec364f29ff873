{{/* Arguments of `mta-operator run`: what it watches, the image of the MTA pods, health, metrics, log level. */}}
{{- define "mta-operator.args" -}}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
- --leader-election-namespace={{ .Release.Namespace }}
- --leader-election-name={{ include "mta-operator.fullname" . }}
- --relay-image={{ include "mta-operator.image" . }}
- --image-pull-policy={{ .Values.image.pullPolicy }}
- --liveness=http://0.0.0.0:{{ .Values.healthPort }}/healthz
- --metrics-port={{ .Values.metricsPort }}
- --log-level={{ .Values.logLevel }}
{{- end -}}
