{{/*
The experiment Job's spec. Its pod template holds no chart or app version: a chart upgrade alone does not
replace the Job.
*/}}
{{- define "colearn-fleet.backendJobSpec" -}}
{{- $locations := .Values.backend.dataLocations }}
{{- if and (not $locations) (ne .Values.data.mode "embedded") }}
{{- $locations = list "/data" }}
{{- end }}
{{- $run := include "colearn-fleet.runName" . }}
backoffLimit: {{ .Values.backend.backoffLimit }}
activeDeadlineSeconds: {{ .Values.backend.activeDeadlineSeconds }}
{{- if not (kindIs "invalid" .Values.backend.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ .Values.backend.ttlSecondsAfterFinished }}
{{- end }}
# No podFailurePolicy: with one, the Job replaces a pod only once the pod has reached a terminal phase,
# so a backend on a lost node would wait for the node's pods to be garbage-collected before the run
# resumes. Without one, a deleted or evicted pod is replaced at once (and counts against backoffLimit);
# the run directory's lock keeps a second backend off the run while the first is still stopping.
template:
  metadata:
    labels:
      {{- include "colearn-fleet.selectorLabels" (dict "ctx" . "component" "backend") | nindent 6 }}
      app.kubernetes.io/part-of: colearn-fleet
      colearn.io/run: {{ $run | quote }}
      {{- with .Values.backend.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .Values.backend.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "colearn-fleet.serviceAccountName" . }}
    automountServiceAccountToken: false
    enableServiceLinks: false
    securityContext:
      {{- include "colearn-fleet.podSecurityContext" . | nindent 6 }}
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.backend.priorityClassName }}
    priorityClassName: {{ . }}
    {{- end }}
    {{- with .Values.backend.schedulerName }}
    schedulerName: {{ . }}
    {{- end }}
    {{- with .Values.backend.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.backend.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.backend.affinity }}
    affinity:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    containers:
      - name: backend
        image: {{ include "colearn-fleet.backendImage" . }}
        imagePullPolicy: {{ .Values.backend.image.pullPolicy }}
        # The image's entrypoint is `colearn-backend`. Learner i is the StatefulSet's pod i, and with
        # an embedded dataset it gets shard i of N.
        args:
          - run
          - {{ printf "--learners=%v" (include "colearn-fleet.learnerAddresses" .) | quote }}
          - {{ printf "--model_tag=%v" (.Values.backend.modelTag) | quote }}
          - {{ printf "--dataloader_tag=%v" (.Values.backend.dataloaderTag) | quote }}
          - {{ printf "--model_params=%v" (toJson .Values.backend.modelParams) | quote }}
          - {{ printf "--dataloader_params=%v" (toJson .Values.backend.dataloaderParams) | quote }}
          {{- with $locations }}
          - {{ printf "--data_locations=%v" (join "," .) | quote }}
          {{- end }}
          - {{ printf "--rounds=%v" (int .Values.backend.rounds) | quote }}
          - {{ printf "--vote_threshold=%v" (.Values.vote.threshold) | quote }}
          - {{ printf "--quorum=%v" (int .Values.vote.quorum) | quote }}
          - {{ printf "--connect_timeout=%v" (.Values.backend.connectTimeoutSeconds) | quote }}
          - {{ printf "--round_timeout=%v" (.Values.backend.roundTimeoutSeconds) | quote }}
          # The experiment's run directory: a pod that finds it (a retry, a replacement) resumes the run.
          - {{ printf "--out=/results/%v" $run | quote }}
          - --resume_if_exists
          - {{ printf "--metrics_port=%v" (int .Values.backend.metricsPort) | quote }}
          - {{ printf "--log_level=%v" (.Values.backend.logLevel) | quote }}
          {{- with include "colearn-fleet.clientTlsArgs" . }}
          {{- . | nindent 10 }}
          {{- end }}
        {{- if or .Values.auth.existingSecret .Values.backend.extraEnv }}
        env:
          {{- with include "colearn-fleet.authTokenEnv" . }}
          {{- . | nindent 10 }}
          {{- end }}
          {{- with .Values.backend.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- end }}
        {{- with .Values.backend.extraEnvFrom }}
        envFrom:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        ports:
          - name: metrics
            containerPort: {{ .Values.backend.metricsPort }}
            protocol: TCP
        resources:
          {{- toYaml .Values.backend.resources | nindent 10 }}
        securityContext:
          {{- include "colearn-fleet.containerSecurityContext" . | nindent 10 }}
        volumeMounts:
          - name: results
            mountPath: /results
          - name: tmp
            mountPath: /tmp
          {{- with include "colearn-fleet.clientTlsMounts" . }}
          {{- . | nindent 10 }}
          {{- end }}
          {{- with .Values.backend.extraVolumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      - name: results
        {{- with include "colearn-fleet.resultsClaim" . }}
        persistentVolumeClaim:
          claimName: {{ . }}
        {{- else }}
        emptyDir: {}
        {{- end }}
      - name: tmp
        emptyDir: {}
      {{- with include "colearn-fleet.clientTlsVolumes" . }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with .Values.backend.extraVolumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
{{- end }}

{{/* The results claim: backend.results.existingClaim, the chart's `<prefix>-results`, or none (emptyDir). */}}
{{- define "colearn-fleet.resultsClaim" -}}
{{- if .Values.backend.results.existingClaim }}
{{- .Values.backend.results.existingClaim }}
{{- else if .Values.backend.results.persistence.enabled }}
{{- include "colearn-fleet.prefix" . }}-results
{{- end }}
{{- end }}
