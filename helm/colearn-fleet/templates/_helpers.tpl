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

{{/*
Images: `[<global.imageRegistry>/]<repository>:<tag>[@<digest>]`; an empty tag means the chart's appVersion.
Call with (dict "ctx" $ "image" .Values.image).
*/}}
{{- define "colearn-fleet.image" -}}
{{- $ref := printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) }}
{{- with .ctx.Values.global.imageRegistry }}
{{- $ref = printf "%s/%s" (trimSuffix "/" .) $ref }}
{{- end }}
{{- with .image.digest }}
{{- $ref = printf "%s@%s" $ref . }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* The learners' image: the GPU build when GPUs are on. */}}
{{- define "colearn-fleet.learnerImage" -}}
{{- include "colearn-fleet.image" (dict "ctx" . "image" (ternary .Values.gpu.image .Values.image .Values.gpu.enabled)) }}
{{- end }}

{{- define "colearn-fleet.backendImage" -}}
{{- include "colearn-fleet.image" (dict "ctx" . "image" .Values.backend.image) }}
{{- end }}

{{/* The experiment's name, and its run directory's: backend.runName, or the release name. */}}
{{- define "colearn-fleet.runName" -}}
{{- default .Release.Name .Values.backend.runName }}
{{- end }}

{{/*
The experiment's fleet size: backend.learners; else the size recorded on the Job of the experiment
running under this run name (an experiment keeps its fleet: scaling the learners neither restarts nor
changes it); else replicas. `helm template` sees no cluster and renders replicas.
*/}}
{{- define "colearn-fleet.experimentLearners" -}}
{{- $n := int .Values.replicas }}
{{- if not (kindIs "invalid" .Values.backend.learners) }}
{{- $n = int .Values.backend.learners }}
{{- else }}
{{- $selector := printf "app.kubernetes.io/instance=%s,app.kubernetes.io/component=backend" .Release.Name }}
{{- $jobs := lookup "batch/v1" "Job" .Release.Namespace "" }}
{{- range $job := (dig "items" (list) $jobs) }}
{{- $labels := dig "metadata" "labels" (dict) $job }}
{{- $annotations := dig "metadata" "annotations" (dict) $job }}
{{- if and (eq (get $labels "app.kubernetes.io/instance") $.Release.Name) (eq (get $labels "app.kubernetes.io/component") "backend") (eq (get $annotations "colearn.io/run") (include "colearn-fleet.runName" $)) (get $annotations "colearn.io/learners") }}
{{- $n = int (get $annotations "colearn.io/learners") }}
{{- end }}
{{- end }}
{{- end }}
{{- $n }}
{{- end }}

{{/*
Learner i's stable address: `<sts>-<i>.<headless svc>.<ns>.svc.<domain>:<grpc>`. The headless Service
publishes not-ready addresses, so each name resolves as soon as its pod has an IP.
*/}}
{{- define "colearn-fleet.learnerAddresses" -}}
{{- $learner := include "colearn-fleet.learner" . }}
{{- $addresses := list }}
{{- range $i := until (int (include "colearn-fleet.experimentLearners" .)) }}
{{- $addresses = append $addresses (printf "%s-%d.%s.%s.svc.%s:%d" $learner $i $learner $.Release.Namespace $.Values.clusterDomain (int $.Values.learner.ports.grpc)) }}
{{- end }}
{{- join "," $addresses }}
{{- end }}

{{/*
The PodDisruptionBudget's maxUnavailable: pdb.maxUnavailable, or the learners the vote can spare
(rounds.py: a proposal is accepted when approvals >= (N - 1) * threshold, and a round is void when fewer
than `quorum` voters answer). The vote needs quorum + 1 learners with a quorum (the voters that must answer,
and a proposer), ceil((N - 1) * threshold) + 1 without (enough approvals, and a proposer), rounded to 9
places first so that 24 * 0.28 = 6.720000000000001 does not ask for one learner more. Never below 1: a
budget of 0 would block every drain for good.
*/}}
{{- define "colearn-fleet.pdbMaxUnavailable" -}}
{{- if not (kindIs "invalid" .Values.pdb.maxUnavailable) }}
{{- .Values.pdb.maxUnavailable }}
{{- else }}
{{- $n := int .Values.replicas }}
{{- $needed := 0 }}
{{- if gt (int .Values.vote.quorum) 0 }}
{{- $needed = add (int .Values.vote.quorum) 1 }}
{{- else }}
{{- $needed = add (int (ceil (round (mulf (sub $n 1) .Values.vote.threshold) 9))) 1 }}
{{- end }}
{{- max 1 (sub $n $needed) }}
{{- end }}
{{- end }}

{{/*
The hardened pod and container security contexts (Pod Security `restricted`). The user and groups come
from securityContext (the images' user is 10001:10001); a null one is left to the platform (OpenShift).
*/}}
{{- define "colearn-fleet.identity" -}}
{{- range $key := list "runAsUser" "runAsGroup" }}
{{- with get $.Values.securityContext $key }}
{{ $key }}: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "colearn-fleet.podSecurityContext" -}}
runAsNonRoot: true
{{- include "colearn-fleet.identity" . }}
{{- with .Values.securityContext.fsGroup }}
fsGroup: {{ . }}
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "colearn-fleet.containerSecurityContext" -}}
runAsNonRoot: true
{{- include "colearn-fleet.identity" . }}
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
{{- range $section := list "requests" "limits" }}
{{- range $resource, $_ := (get $.Values.learner.resources $section | default dict) }}
{{- if eq $resource $.Values.gpu.resourceName }}
{{- fail (printf "learner.resources.%s holds %s: GPUs come from gpu.enabled and gpu.count (%d), not from learner.resources" $section $resource (int $.Values.gpu.count)) }}
{{- end }}
{{- end }}
{{- range $resource, $_ := (get $.Values.gpu.resources $section | default dict) }}
{{- if eq $resource $.Values.gpu.resourceName }}
{{- fail (printf "gpu.resources.%s holds %s: the GPU count is gpu.count (%d)" $section $resource (int $.Values.gpu.count)) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $name := list "podMonitor" "serviceMonitor" }}
{{- $monitor := get $.Values.monitoring $name }}
{{- if and $monitor.enabled $monitor.scrapeTimeout }}
{{- if gt (include "colearn-fleet.milliseconds" $monitor.scrapeTimeout | int64) (include "colearn-fleet.milliseconds" $monitor.interval | int64) }}
{{- fail (printf "monitoring.%s.scrapeTimeout (%s) exceeds its interval (%s): Prometheus refuses such a scrape config" $name $monitor.scrapeTimeout $monitor.interval) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.backend.learners)) .Values.backend.enabled }}
{{- if gt (int .Values.backend.learners) (int .Values.replicas) }}
{{- fail (printf "backend.learners (%d) exceeds replicas (%d): the experiment would wait for learners that do not exist" (int .Values.backend.learners) (int .Values.replicas)) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A Prometheus duration (`1m30s`, `500ms`; the schema checks its form) in milliseconds. */}}
{{- define "colearn-fleet.milliseconds" -}}
{{- $units := dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000 "d" 86400000 "w" 604800000 "y" 31536000000 }}
{{- $total := 0 }}
{{- range $part := regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" . -1 }}
{{- $unit := regexFind "(ms|s|m|h|d|w|y)$" $part }}
{{- $total = add $total (mul (trimSuffix $unit $part | int64) (get $units $unit)) }}
{{- end }}
{{- $total }}
{{- end }}

{{/*
The client side of the learners' TLS and token, shared by the backend Job and `helm test`'s pod: the
flags, the environment, the mounts and the volumes (only the CA of the learners' Secret, never their key,
and under mTLS the client's certificate). Each renders list items, or nothing.
*/}}
{{- define "colearn-fleet.clientTlsArgs" -}}
{{- if .Values.tls.enabled }}
- --tls_ca=/etc/colearn/tls-ca/ca.crt
{{- if .Values.tls.mtls }}
- --tls_cert=/etc/colearn/tls-client/tls.crt
- --tls_key=/etc/colearn/tls-client/tls.key
{{- end }}
{{- with .Values.tls.serverName }}
- {{ printf "--tls_server_name=%v" (.) | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "colearn-fleet.authTokenEnv" -}}
{{- if .Values.auth.existingSecret }}
# From the environment, not a flag: a command line is visible to anyone who can list processes.
- name: COLEARN_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.existingSecret }}
      key: {{ .Values.auth.secretKey }}
{{- end }}
{{- end }}

{{- define "colearn-fleet.clientTlsMounts" -}}
{{- if .Values.tls.enabled }}
- name: tls-ca
  mountPath: /etc/colearn/tls-ca
  readOnly: true
{{- if .Values.tls.mtls }}
- name: tls-client
  mountPath: /etc/colearn/tls-client
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "colearn-fleet.clientTlsVolumes" -}}
{{- if .Values.tls.enabled }}
- name: tls-ca
  secret:
    secretName: {{ .Values.tls.secretName }}
    defaultMode: 288
    items:
      - key: ca.crt
        path: ca.crt
{{- if .Values.tls.mtls }}
- name: tls-client
  secret:
    secretName: {{ .Values.tls.clientSecretName }}
    defaultMode: 288
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end }}
