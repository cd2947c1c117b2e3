{{/* Names, labels and the parts shared by the gateway Deployment, the migration Job and the CronJobs. */}}

{{- define "tiergate.name" -}}
{{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tiergate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{ .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "tiergate.name" .) .Release.Name -}}
{{ .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else -}}
{{ printf "%s-%s" .Release.Name (include "tiergate.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "tiergate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tiergate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tiergate.labels" -}}
{{ include "tiergate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tiergate.serviceAccountName" -}}
{{ default (include "tiergate.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "tiergate.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Names of the bundled services, within the 63 characters of a DNS label. */}}
{{- define "tiergate.postgresqlName" -}}
{{ printf "%s-postgresql" (include "tiergate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tiergate.redisName" -}}
{{ printf "%s-redis" (include "tiergate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tiergate.chromaName" -}}
{{ printf "%s-chroma" (include "tiergate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The hook ConfigMap of the migration Job: the release's own ConfigMap does not exist yet before install. */}}
{{- define "tiergate.migrationsConfigName" -}}
{{ printf "%s-migrations" (include "tiergate.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* tiergate.yaml: the settings the chart owns, then the tier config from values. Secrets as env:NAME. */}}
{{- define "tiergate.config" -}}
master_key: env:TIERGATE_MASTER_KEY
database_url: env:DATABASE_URL
{{- if or .Values.redisBundled.enabled .Values.redis.existingSecret }}
redis_url: env:REDIS_URL
{{- end }}
{{- if or .Values.chromaBundled.enabled .Values.chroma.url }}
chroma_url: env:CHROMA_URL
{{- end }}
access_log: {{ .Values.gateway.accessLog }}
log_level: {{ .Values.gateway.logLevel }}
log_format: {{ .Values.gateway.logFormat }}
drain_timeout_s: {{ .Values.gateway.drainTimeoutSeconds }}
metrics_port: {{ .Values.metrics.port }}
metrics_host: 0.0.0.0
metrics_tenant_label: {{ .Values.metrics.tenantLabel }}
{{ toYaml .Values.config }}
{{- end }}

{{/* Environment shared by every tiergate container: config location, logging, and secrets by reference. */}}
{{- define "tiergate.env" -}}
- name: TIERGATE_CONFIG
  value: /etc/tiergate/tiergate.yaml
- name: TIERGATE_LOG_LEVEL
  value: {{ .Values.gateway.logLevel | quote }}
- name: TIERGATE_LOG_FORMAT
  value: {{ .Values.gateway.logFormat | quote }}
- name: TIERGATE_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ required "secrets.masterKey.secretName is required" .Values.secrets.masterKey.secretName }}
      key: {{ .Values.secrets.masterKey.key }}
{{- if .Values.postgresql.enabled }}
{{- /* Kubernetes expands $(POSTGRES_PASSWORD) because it is defined above DATABASE_URL. */}}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.passwordSecret }}
      key: {{ .Values.postgresql.passwordKey }}
- name: DATABASE_URL
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" .Values.postgresql.user (include "tiergate.postgresqlName" .) .Values.postgresql.database | quote }}
{{- else }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ required "set database.existingSecret or postgresql.enabled" .Values.database.existingSecret }}
      key: {{ .Values.database.secretKey }}
{{- end }}
{{- if .Values.redisBundled.enabled }}
- name: REDIS_URL
  value: {{ printf "redis://%s:6379/0" (include "tiergate.redisName" .) | quote }}
{{- else if .Values.redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.secretKey }}
{{- end }}
{{- if .Values.chromaBundled.enabled }}
- name: CHROMA_URL
  value: {{ printf "http://%s:8000" (include "tiergate.chromaName" .) | quote }}
{{- else if .Values.chroma.url }}
- name: CHROMA_URL
  value: {{ .Values.chroma.url | quote }}
{{- end }}
{{- if .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.tracing.otlpEndpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ .Values.tracing.serviceName | quote }}
{{- end }}
{{- range .Values.secrets.env }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- with .Values.gateway.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The pod of a one-off tiergate command. Called with (dict "root" $ "args" (list ...) "configMap" NAME "resources" ...). */}}
{{- define "tiergate.jobPod" -}}
serviceAccountName: {{ include "tiergate.serviceAccountName" .root }}
automountServiceAccountToken: false
restartPolicy: Never
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
containers:
  - name: tiergate
    image: {{ include "tiergate.image" .root }}
    imagePullPolicy: {{ .root.Values.image.pullPolicy }}
    args:
      {{- toYaml .args | nindent 6 }}
    env:
      {{- include "tiergate.env" .root | nindent 6 }}
    resources:
      {{- toYaml .resources | nindent 6 }}
    securityContext:
      {{- toYaml .root.Values.securityContext | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/tiergate
        readOnly: true
      - name: tmp
        mountPath: /tmp
volumes:
  - name: config
    configMap:
      name: {{ .configMap }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ .root.Values.tmpSizeLimit }}
{{- end }}
