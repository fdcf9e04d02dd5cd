{{/*
Names. Objects are `<prefix>-learner`, `<prefix>-backend`, ...: the prefix is the release name (or
fullnameOverride), cut to 44 characters so that a StatefulSet name stays within 52 (its pods' revision
label adds a hash) and every Service name within a DNS label.
*/}}
{{- define "colearn-fleet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "colearn-fleet.prefix" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- end }}

{{- define "colearn-fleet.learner" -}}
{{- include "colearn-fleet.prefix" . }}-learner
{{- end }}

{{- define "colearn-fleet.backend" -}}
{{- include "colearn-fleet.prefix" . }}-backend
{{- end }}

{{- define "colearn-fleet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "colearn-fleet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (printf "%s-colearn" (include "colearn-fleet.prefix" .)) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Labels. Selector labels never change over a release's life (a StatefulSet's selector is immutable), so
they hold no version; `component` tells learners, the backend and the monitoring objects apart.
Call with (dict "ctx" $ "component" "learner").
*/}}
{{- define "colearn-fleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "colearn-fleet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "colearn-fleet.labels" -}}
helm.sh/chart: {{ include "colearn-fleet.chart" .ctx }}
{{ include "colearn-fleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: colearn-fleet
{{- end }}

{{/* Images: the GPU build when GPUs are on; an empty tag means the chart's appVersion. */}}
{{- define "colearn-fleet.learnerImage" -}}
{{- $image := ternary .Values.gpu.image .Values.image .Values.gpu.enabled }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}

{{- define "colearn-fleet.backendImage" -}}
{{- printf "%s:%s" .Values.backend.image.repository (default .Chart.AppVersion .Values.backend.image.tag) }}
{{- end }}

{{/*
Learner i's stable address: `<sts>-<i>.<headless svc>.<ns>.svc.<domain>:<grpc>`. The headless Service
publishes not-ready addresses, so each name resolves as soon as its pod has an IP.
*/}}
{{- define "colearn-fleet.learnerAddresses" -}}
{{- $learner := include "colearn-fleet.learner" . }}
{{- $addresses := list }}
{{- range $i := until (int .Values.replicas) }}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc.%s:%d" $learner $i $learner $.Release.Namespace $.Values.clusterDomain (int $.Values.learner.ports.grpc)) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/*
The PodDisruptionBudget's minAvailable, from the vote (rounds.py): a proposal is accepted when
approvals >= (N - 1) * threshold, and a round is void when fewer than `quorum` voters answer.
With a quorum: quorum voters + 1 proposer. Without: ceil((N - 1) * threshold) approvals + 1 proposer,
rounded to 9 places first, so that 24 * 0.28 = 6.720000000000001 or 25 * 0.28 = 7.000000000000001 do
not ask for one learner more than the vote needs. Always at most replicas.
*/}}
{{- define "colearn-fleet.pdbMinAvailable" -}}
{{- $n := int .Values.replicas }}
{{- $needed := 0 }}
{{- if not (kindIs "invalid" .Values.pdb.minAvailable) }}
{{- $needed = int .Values.pdb.minAvailable }}
{{- else if gt (int .Values.vote.quorum) 0 }}
{{- $needed = add (int .Values.vote.quorum) 1 }}
{{- else }}
{{- $needed = add (int (ceil (round (mulf (sub $n 1) .Values.vote.threshold) 9))) 1 }}
{{- end }}
{{- min $needed $n }}
{{- end }}

{{/* The hardened pod and container security contexts (the images' user is 10001:10001). */}}
{{- define "colearn-fleet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "colearn-fleet.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* storageClassName: empty means the cluster's default (the field is left out), `-` means none. */}}
{{- define "colearn-fleet.storageClassName" -}}
{{- if eq . "-" }}
storageClassName: ""
{{- else if . }}
storageClassName: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Values that the schema cannot check, because they relate two values to each other; `helm template`,
`install` and `lint` stop with the message.
*/}}
{{- define "colearn-fleet.validate" -}}
{{- $voters := sub (int .Values.replicas) 1 }}
{{- if gt (int .Values.vote.quorum) $voters }}
{{- fail (printf "vote.quorum (%d) exceeds the voters a round has (replicas - 1 = %d): every round would be void" (int .Values.vote.quorum) $voters) }}
{{- end }}
{{- if and .Values.monitoring.podMonitor.enabled .Values.monitoring.serviceMonitor.enabled }}
{{- fail "monitoring.podMonitor and monitoring.serviceMonitor both scrape the learners: enable one of them" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName: an existing Secret with tls.crt, tls.key and ca.crt" }}
{{- end }}
{{- if and .Values.tls.mtls (not .Values.tls.enabled) }}
{{- fail "tls.mtls needs tls.enabled: client certificates are checked by the TLS handshake" }}
{{- end }}
{{- if and .Values.tls.mtls .Values.backend.enabled (not .Values.tls.clientSecretName) }}
{{- fail "tls.mtls needs tls.clientSecretName: the backend Job's client certificate (tls.crt, tls.key)" }}
{{- end }}
{{- if and (eq .Values.data.mode "sharedClaim") (not .Values.data.sharedClaim.claimName) }}
{{- fail "data.mode sharedClaim needs data.sharedClaim.claimName: an existing PVC with one folder per learner" }}
{{- end }}
{{- if le (float64 .Values.learner.terminationGracePeriodSeconds) (float64 .Values.learner.graceSeconds) }}
{{- fail (printf "learner.terminationGracePeriodSeconds (%v) must exceed learner.graceSeconds (%v), or SIGKILL cuts the drain short" .Values.learner.terminationGracePeriodSeconds .Values.learner.graceSeconds) }}
{{- end }}
{{- $ports := list (int .Values.learner.ports.grpc) (int .Values.learner.ports.metrics) }}
{{- if .Values.tls.enabled }}
{{- $ports = append $ports (int .Values.learner.ports.health) }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "learner.ports must differ from each other, got %v" $ports) }}
{{- end }}
{{- end }}
