{{/*
Names, labels and the pieces every Skycut pod shares: the image, the configuration volume and
the environment that carries the secrets.
*/}}

{{- define "skycut.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "skycut.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "skycut.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "skycut.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one role; call with (dict "root" $ "role" "frontend"). */}}
{{- define "skycut.selectorLabels" -}}
app.kubernetes.io/name: {{ include "skycut.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end }}

{{- define "skycut.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "skycut.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "skycut.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "skycut.secretName" -}}
{{- default (printf "%s-secrets" (include "skycut.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/* Pod annotations: a checksum of the configuration so a changed ConfigMap or Secret rolls the
pods, the user's annotations, and Prometheus scrape hints for the given port. Call with
(dict "root" $ "port" 8080). */}}
{{- define "skycut.podAnnotations" -}}
checksum/config: {{ include (print .root.Template.BasePath "/configmap.yaml") .root | sha256sum }}
checksum/secret: {{ include (print .root.Template.BasePath "/secret.yaml") .root | sha256sum }}
{{- if .root.Values.metricsAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .root.Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every role. */}}
{{- define "skycut.podSpecCommon" -}}
serviceAccountName: {{ include "skycut.serviceAccountName" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* One secret as an environment variable; call with (dict "root" $ "env" "SKYCUT_X" "key"
"x" "optional" true). */}}
{{- define "skycut.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "skycut.secretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/* Environment of every Skycut container: the log filter and the secrets. The configuration
file has the rest. Call with (dict "root" $ "database" true) to add the database URL, which
only wobbly and the migration need. */}}
{{- define "skycut.env" -}}
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
{{- if .database }}
{{ include "skycut.secretEnv" (dict "root" .root "env" "SKYCUT_DATABASE_URL" "key" "database-url") }}
{{- end }}
{{ include "skycut.secretEnv" (dict "root" .root "env" "SKYCUT_WOBBLY__TOKEN_KEY" "key" "wobbly-token-key") }}
{{ include "skycut.secretEnv" (dict "root" .root "env" "SKYCUT_REDIS_URL" "key" "redis-url") }}
{{ include "skycut.secretEnv" (dict "root" .root "env" "SKYCUT_SIGNING_KEY" "key" "signing-key" "optional" true) }}
{{ include "skycut.secretEnv" (dict "root" .root "env" "SKYCUT_BUCKET__S3_ACCESS_KEY_ID" "key" "s3-access-key-id" "optional" true) }}
{{ include "skycut.secretEnv" (dict "root" .root "env" "SKYCUT_BUCKET__S3_SECRET_ACCESS_KEY" "key" "s3-secret-access-key" "optional" true) }}
{{- end }}

{{/* Volumes of every Skycut pod: the configuration file, the GCS key, a writable data
directory and /tmp (the root file system is read-only). */}}
{{- define "skycut.volumes" -}}
- name: config
  configMap:
    name: {{ include "skycut.fullname" . }}
- name: gcs-key
  secret:
    secretName: {{ include "skycut.secretName" . }}
    optional: true
    items:
      - key: gcs-key.json
        path: gcs-key.json
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "skycut.volumeMounts" -}}
- name: config
  mountPath: /etc/skycut
  readOnly: true
- name: gcs-key
  mountPath: /var/run/secrets/skycut
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* The local result bucket and the repositories, for the roles that read images or results. */}}
{{- define "skycut.dataVolumes" -}}
{{- if eq .Values.config.bucket.kind "local" }}
- name: results
  persistentVolumeClaim:
    claimName: {{ required "resultsVolume.existingClaim (a ReadWriteMany claim) is required with config.bucket.kind local" .Values.resultsVolume.existingClaim }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "skycut.dataVolumeMounts" -}}
{{- if eq .Values.config.bucket.kind "local" }}
- name: results
  mountPath: /var/lib/skycut/bucket
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
