{{/*
Relabelings shared by the PodMonitor and the ServiceMonitor: every learner series gets
job=<monitoring.jobName> (the dashboard and the alert rules select job="colearn-learner") and
instance=<pod name>, which names the learner the way the backend's addresses do.
*/}}
{{- define "colearn-fleet.scrapeRelabelings" -}}
- action: replace
  targetLabel: job
  replacement: {{ .Values.monitoring.jobName }}
- action: replace
  sourceLabels:
    - __meta_kubernetes_pod_name
  targetLabel: instance
{{- end }}
