{{/* Command-line arguments of mta-operator: what it watches, its health endpoint, its log level. */}}
{{- define "mta-operator.args" -}}
{{- if .Values.watchNamespaces }}
{{- range .Values.watchNamespaces }}
- --namespace={{ . }}
{{- end }}
{{- else }}
- --all-namespaces
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.healthPort }}/healthz
- --log-level={{ .Values.logLevel }}
{{- end -}}
