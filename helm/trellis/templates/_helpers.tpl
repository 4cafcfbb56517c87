{{/*
Names, labels and the per-service facts every template shares.
*/}}

{{- define "trellis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: `<release>` when it already contains the chart name, else `<release>-trellis`. */}}
{{- define "trellis.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "trellis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component: (dict "ctx" $ "component" "identity"). */}}
{{- define "trellis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trellis.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Standard labels of one component: (dict "ctx" $ "component" "identity"). */}}
{{- define "trellis.labels" -}}
helm.sh/chart: {{ include "trellis.chart" .ctx }}
{{ include "trellis.selectorLabels" . }}
app.kubernetes.io/part-of: trellis
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end -}}

{{/* Labels that select every pod of this release (cell). */}}
{{- define "trellis.releaseSelector" -}}
app.kubernetes.io/name: {{ include "trellis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The image reference. */}}
{{- define "trellis.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The services of the cell, in the binary's order (which fixes their ports), as a JSON list:
identity, permissions and notifications always, the optional modules when enabled.
*/}}
{{- define "trellis.services" -}}
{{- $out := list -}}
{{- range $name := list "identity" "permissions" "tasks" "crm" "documents" "finance" "notifications" -}}
{{- if or (has $name (list "identity" "permissions" "notifications")) (index $.Values.modules $name).enabled -}}
{{- $out = append $out $name -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* gRPC port of a service: 50061..50067 in the binary's order (trellis_kit::config::Config::service_addrs). */}}
{{- define "trellis.grpcPort" -}}
{{- $ports := dict "identity" 50061 "permissions" 50062 "tasks" 50063 "crm" 50064 "documents" 50065 "finance" 50066 "notifications" 50067 -}}
{{- index $ports . -}}
{{- end -}}

{{/* Admin HTTP port of a service (/healthz, /readyz, /metrics): 9061..9067. */}}
{{- define "trellis.adminPort" -}}
{{- sub (include "trellis.grpcPort" . | atoi) 41000 -}}
{{- end -}}

{{/* Settings of one service: serviceDefaults overlaid with services.<name>. (dict "ctx" $ "name" "tasks") */}}
{{- define "trellis.serviceSettings" -}}
{{- $overrides := index .ctx.Values.services .name | default dict -}}
{{- toJson (mergeOverwrite (deepCopy .ctx.Values.serviceDefaults) (deepCopy $overrides)) -}}
{{- end -}}

{{- define "trellis.cellSecretName" -}}
{{- default (printf "%s-secrets" (include "trellis.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "trellis.datastoresSecretName" -}}
{{- printf "%s-datastores" (include "trellis.fullname" .) -}}
{{- end -}}

{{/* Secret name and key holding a data store's URL: (dict "ctx" $ "store" "postgres"). */}}
{{- define "trellis.storeSecretRef" -}}
{{- $store := index .ctx.Values .store -}}
{{- if $store.inCluster.enabled -}}
name: {{ include "trellis.datastoresSecretName" .ctx }}
key: {{ $store.secretKey }}
{{- else -}}
name: {{ required (printf "%s.existingSecret is required when %s.inCluster.enabled is false (a Secret with key %s)" .store .store $store.secretKey) $store.existingSecret }}
key: {{ $store.secretKey }}
{{- end -}}
{{- end -}}

{{/* Host name of an in-cluster data store. */}}
{{- define "trellis.storeHost" -}}
{{- printf "%s-%s" (include "trellis.fullname" .ctx) .store -}}
{{- end -}}

{{/* TRELLIS_<SVC>_GRPC_URL for every service of the cell (its ClusterIP Service). */}}
{{- define "trellis.serviceUrlsEnv" -}}
{{- range $svc := (include "trellis.services" . | fromJsonArray) }}
- name: TRELLIS_{{ upper $svc }}_GRPC_URL
  value: {{ printf "http://%s-%s:%s" (include "trellis.fullname" $) $svc (include "trellis.grpcPort" $svc) | quote }}
{{- end }}
{{- end -}}

{{/* Environment every container of the cell shares (component in .component). */}}
{{- define "trellis.commonEnv" -}}
{{- $ctx := .ctx -}}
- name: BIND_HOST
  value: "0.0.0.0"
- name: PUBLIC_BASE_URL
  value: {{ $ctx.Values.cell.publicBaseUrl | quote }}
- name: JWT_ISSUER
  value: {{ default $ctx.Values.cell.publicBaseUrl $ctx.Values.cell.jwtIssuer | quote }}
- name: JWT_AUDIENCE
  value: {{ $ctx.Values.cell.jwtAudience | quote }}
- name: LOG_LEVEL
  value: {{ $ctx.Values.cell.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ $ctx.Values.cell.logFormat | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "trellis-%s" .component | quote }}
{{- with $ctx.Values.cell.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: CELL_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ include "trellis.cellSecretName" $ctx }}
      key: CELL_SECRET
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      {{- include "trellis.storeSecretRef" (dict "ctx" $ctx "store" "redis") | nindent 6 }}
{{- include "trellis.serviceUrlsEnv" $ctx }}
{{- end -}}

{{/* Database and broker settings of the services and the migration Job. */}}
{{- define "trellis.backendEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- include "trellis.storeSecretRef" (dict "ctx" . "store" "postgres") | nindent 6 }}
- name: SERVICE_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "trellis.cellSecretName" . }}
      key: SERVICE_DB_PASSWORD
- name: AMQP_URL
  valueFrom:
    secretKeyRef:
      {{- include "trellis.storeSecretRef" (dict "ctx" . "store" "rabbitmq") | nindent 6 }}
- name: EVENTS_QUEUE_PREFIX
  value: ""
{{- end -}}

{{/* Pod-level volumes every Trellis container mounts (a writable /tmp on a read-only root). */}}
{{- define "trellis.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end -}}
